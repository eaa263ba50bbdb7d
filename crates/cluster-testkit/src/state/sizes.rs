//! What the state sends, by size: the [`Limits`] it enforces, the size of a frame, and the
//! address lists and routing table, joined from each instance's JSON encoded once, with their
//! sizes kept as running sums so that a `MODULE:READY` checks them without encoding.

use super::{ClusterState, Instance};
use bytes::{BufMut, Bytes, BytesMut};
use cluster_proto::payload::{self, AddressConfiguration};

/// The most modules one connection may require (per `MODULE:SEND_REQUIREMENTS` message and in
/// total): 1,024.
pub const MAX_REQUIRED_MODULES: usize = 1024;

/// The default of [`Limits::max_frame_len`]: 4 MiB, the client's inbound message limit (the
/// Go client's and ours).
pub const DEFAULT_MAX_FRAME_LEN: usize = 4 << 20;
/// The default of [`Limits::max_declaration_len`]: 256 KiB.
pub const DEFAULT_MAX_DECLARATION_LEN: usize = 256 << 10;
/// The default of [`Limits::max_endpoints`]: 4,096.
pub const DEFAULT_MAX_ENDPOINTS: usize = 4096;

/// What the state accepts, so that no frame it produces is larger than a client can read.
///
/// The routing table is every ready instance's declaration: without a bound, a few large
/// declarations make `CONFIG:SEND_ROUTES_*` larger than the clients' inbound limit, and every
/// module that wants routes then fails its handshake, again and again. So a `MODULE:READY`
/// is refused (error ack, nothing changes) when its declaration is over
/// [`max_declaration_len`](Self::max_declaration_len) bytes or
/// [`max_endpoints`](Self::max_endpoints) endpoints, or when the routing table or the module's
/// address list with it would not fit in a frame of [`max_frame_len`](Self::max_frame_len)
/// bytes. Configs are held to the same frame limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest frame sent, in bytes, whole (`event||0||data`): default
    /// [`DEFAULT_MAX_FRAME_LEN`], 4 MiB, the clients' inbound message limit. Set it to the
    /// smallest inbound limit of the clients in the test.
    pub max_frame_len: usize,
    /// The largest `MODULE:READY` declaration, in bytes of its JSON as stored: default
    /// [`DEFAULT_MAX_DECLARATION_LEN`], 256 KiB (real declarations are a few KiB: one line per
    /// endpoint).
    pub max_declaration_len: usize,
    /// The most endpoints in one declaration: default [`DEFAULT_MAX_ENDPOINTS`], 4,096.
    pub max_endpoints: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_declaration_len: DEFAULT_MAX_DECLARATION_LEN,
            max_endpoints: DEFAULT_MAX_ENDPOINTS,
        }
    }
}

/// The size of the frame `event||0||data` for `data_len` bytes of data.
#[must_use]
pub fn frame_len(event: &str, data_len: usize) -> usize {
    // The ack id 0 is one digit; empty data is sent without its separator.
    event.len() + 3 + if data_len == 0 { 0 } else { 2 + data_len }
}

impl ClusterState {
    /// The size of the routing table's JSON if the ready instances' JSON lengths summed to
    /// `json_len` over `count` instances.
    pub(super) fn routing_len(json_len: usize, count: usize) -> usize {
        2 + json_len + count.saturating_sub(1)
    }

    pub(super) fn addresses_payload(&self, module: &str) -> Bytes {
        let addresses: Vec<AddressConfiguration> = self
            .modules
            .get(module)
            .map(|m| {
                m.instances
                    .values()
                    .rev()
                    .filter_map(|conn| self.conns.get(conn)?.instance.as_ref())
                    .map(|i| i.declaration.address.clone())
                    .collect()
            })
            .unwrap_or_default();
        Bytes::from(payload::encode_addresses(&addresses))
    }

    /// The size of `module`'s address list if one of its connections, whose ready instance is
    /// `old` (if any), declared an address of `address_len` bytes of JSON.
    pub(super) fn addresses_len_with(
        &self,
        module: &str,
        old: Option<&Instance>,
        address_len: usize,
    ) -> usize {
        let (sum, count) = self
            .modules
            .get(module)
            .map_or((0, 0), |m| (m.addresses_len, m.instances.len()));
        let (others_len, others) = match old {
            Some(old) => (sum - old.address_len, count - 1),
            None => (sum, count),
        };
        2 + address_len + others_len + others
    }

    /// The routing table's JSON, joined from each instance's JSON encoded once at READY (the
    /// same bytes `payload::encode_routing_config` gives).
    pub(super) fn routing_payload(&self) -> Bytes {
        let instances: Vec<&Bytes> = self
            .ready
            .values()
            .rev()
            .filter_map(|conn| Some(&self.conns.get(conn)?.instance.as_ref()?.json))
            .collect();
        let len = 2 + instances.iter().map(|j| j.len() + 1).sum::<usize>();
        let mut buf = BytesMut::with_capacity(len);
        buf.put_u8(b'[');
        for (i, json) in instances.iter().enumerate() {
            if i > 0 {
                buf.put_u8(b',');
            }
            buf.put_slice(json);
        }
        buf.put_u8(b']');
        buf.freeze()
    }
}

/// The length of `address`'s JSON as an element of an address list.
pub(super) fn address_json_len(address: &AddressConfiguration) -> usize {
    payload::encode_addresses(std::slice::from_ref(address)).len() - 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ConnId;
    use crate::state::test_support::ready_json;

    #[test]
    fn the_routing_table_size_is_tracked_through_ready_again_and_disconnect() {
        let mut s = ClusterState::new();
        let check = |s: &ClusterState| {
            let len = ClusterState::routing_len(s.ready_json_len, s.ready.len());
            assert_eq!(len, s.routing_payload().len());
        };
        for (id, ip) in [(1, "10.0.0.1"), (2, "10.0.0.2"), (3, "10.0.0.3")] {
            s.connect(ConnId(id), "A", "p");
            s.module_ready(ConnId(id), ready_json("A", ip).as_bytes())
                .unwrap();
            check(&s);
        }
        s.module_ready(ConnId(2), ready_json("A", "10.0.0.222").as_bytes())
            .unwrap();
        check(&s);
        s.disconnect(ConnId(1));
        check(&s);
        s.disconnect(ConnId(2));
        s.disconnect(ConnId(3));
        check(&s);
        assert_eq!(s.ready_json_len, 0);
    }

    /// The running sum behind the address-list size check stays the size of the list the
    /// dependents get, as instances become ready, re-declare and go away.
    #[test]
    fn address_list_size_follows_instances() {
        let mut s = ClusterState::new();
        let check = |s: &ClusterState| {
            let actual = s.addresses_payload("A").len();
            let module = &s.modules["A"];
            let expected = if module.instances.is_empty() {
                2
            } else {
                2 + module.addresses_len + module.instances.len() - 1
            };
            assert_eq!(expected, actual);
        };
        for i in 1..=5 {
            s.connect(ConnId(i), "A", "p");
            s.module_ready(
                ConnId(i),
                ready_json("A", &format!("10.0.0.{i}")).as_bytes(),
            )
            .unwrap();
            check(&s);
        }
        s.module_ready(ConnId(3), ready_json("A", "10.0.0.333").as_bytes())
            .unwrap();
        check(&s);
        for i in [2, 5, 1] {
            s.disconnect(ConnId(i));
            check(&s);
        }
    }
}
