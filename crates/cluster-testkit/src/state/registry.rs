//! Connections, ready instances and subscriptions: a connection coming and going,
//! `MODULE:SEND_REQUIREMENTS`, `MODULE:READY`, and what the state knows of them.

use super::{
    ActiveConfig, ClusterState, ConnEntry, ConnId, ConnectionInfo, HandleError, Instance,
    MAX_REQUIRED_MODULES, ModuleSnapshot, Notification, ReadyInstance, StoredSchema,
    address_json_len, frame_len, shown_name,
};
use bytes::Bytes;
use cluster_proto::event;
use cluster_proto::payload::{self, GRPC_TRANSPORT, PayloadError};
use std::collections::{BTreeSet, HashMap, HashSet};

#[cfg(doc)]
use super::Limits;

/// The preamble of every module-event handler: decodes the payload with `decode`, then finds
/// the sending connection's entry. The payload is checked first, so a malformed payload is
/// reported as such even from a connection that already went away.
pub(super) fn decode_from<'a, T>(
    conns: &'a mut HashMap<ConnId, ConnEntry>,
    conn: ConnId,
    data: &[u8],
    decode: fn(&[u8]) -> Result<T, PayloadError>,
) -> Result<(T, &'a mut ConnEntry), HandleError> {
    let payload = decode(data)?;
    let entry = conns
        .get_mut(&conn)
        .ok_or(HandleError::UnknownConnection(conn))?;
    Ok((payload, entry))
}

impl ClusterState {
    // ----- inputs: connections and module events -----

    /// A client of `module` connected from `peer`: the module is recorded. Connecting an id
    /// twice replaces nothing (the first registration stays). The name is not checked here:
    /// the service refuses names that [`event::check_module_name`] refuses before it calls
    /// this.
    pub fn connect(&mut self, conn: ConnId, module: &str, peer: &str) {
        if self.conns.contains_key(&conn) {
            return;
        }
        self.conns.insert(
            conn,
            ConnEntry {
                module: module.to_owned(),
                peer: peer.to_owned(),
                instance: None,
                required: Vec::new(),
                routes: false,
                config_subscribed: false,
            },
        );
        self.modules
            .entry(module.to_owned())
            .or_default()
            .connections
            .insert(conn);
    }

    /// `MODULE:SEND_REQUIREMENTS`: for each required module, `<m>_MODULE_CONNECTED` with its
    /// ready instances' addresses (`[]` if none or unknown) and a subscription; if routes are
    /// wanted, `CONFIG:SEND_ROUTES_WHEN_CONNECTED` and a subscription. Sending requirements
    /// again adds to the subscriptions (as the real service does: it never leaves a room).
    ///
    /// The `<m>_MODULE_CONNECTED` events follow the order of the names in the message, each
    /// name once (its first place counts); names required by an earlier message are answered
    /// again.
    ///
    /// A connection requires at most [`MAX_REQUIRED_MODULES`] modules: a message with more
    /// names than that, or one that would take the connection's distinct required modules over
    /// it, is refused with [`HandleError::TooManyRequiredModules`] before anything changes.
    /// (The Go client sends the handful of modules a service calls; the cap keeps a hostile or
    /// broken peer from making the service do unbounded work and queue unbounded frames under
    /// its one lock. The real service would fail too, on its database, with some error text.)
    ///
    /// A required name that [`event::check_module_name`] refuses (empty, `||`, a leading
    /// `__ack_`, control characters, over 256 bytes) is refused with
    /// [`HandleError::InvalidModuleName`]: `<name>_MODULE_CONNECTED` would not decode as what
    /// it is.
    ///
    /// # Errors
    /// [`HandleError`] for a payload that is not a `ModuleRequirements`, too many required
    /// modules, an invalid module name or an unknown connection; nothing changes then.
    pub fn module_requirements(
        &mut self,
        conn: ConnId,
        data: &[u8],
    ) -> Result<Vec<Notification>, HandleError> {
        let (requirements, entry) = decode_from(
            &mut self.conns,
            conn,
            data,
            payload::decode_module_requirements,
        )?;
        let asked = requirements.required_modules.len();
        if asked > MAX_REQUIRED_MODULES {
            return Err(HandleError::TooManyRequiredModules {
                count: asked,
                max: MAX_REQUIRED_MODULES,
            });
        }
        // The names of this message, in order, each once.
        let mut seen = HashSet::with_capacity(asked);
        let order: Vec<&str> = requirements
            .required_modules
            .iter()
            .map(String::as_str)
            .filter(|m| seen.insert(*m))
            .collect();
        let already: HashSet<&str> = entry.required.iter().map(String::as_str).collect();
        let added: Vec<&str> = order
            .iter()
            .copied()
            .filter(|m| !already.contains(m))
            .collect();
        if let Some((name, reason)) = order
            .iter()
            .find_map(|m| event::check_module_name(m).err().map(|e| (*m, e)))
        {
            return Err(HandleError::InvalidModuleName {
                name: shown_name(name),
                reason,
            });
        }
        let total = entry.required.len() + added.len();
        if total > MAX_REQUIRED_MODULES {
            return Err(HandleError::TooManyRequiredModules {
                count: total,
                max: MAX_REQUIRED_MODULES,
            });
        }
        entry.required.extend(added.iter().map(|m| (*m).to_owned()));
        for module in &order {
            match self.dependents.get_mut(*module) {
                Some(set) => {
                    set.insert(conn);
                }
                None => {
                    self.dependents
                        .insert((*module).to_owned(), BTreeSet::from([conn]));
                }
            }
        }
        if requirements.require_routes {
            entry.routes = true;
            self.routing_subscribers.insert(conn);
        }
        let mut notifications = Vec::with_capacity(order.len() + 1);
        for module in order {
            notifications.push(Notification::new(
                event::module_connected(module),
                self.addresses_payload(module),
                vec![conn],
            ));
        }
        if requirements.require_routes {
            notifications.push(Notification::new(
                event::CONFIG_SEND_ROUTES_WHEN_CONNECTED,
                self.routing_payload(),
                vec![conn],
            ));
        }
        Ok(notifications)
    }

    /// `MODULE:READY`: stores the declaration as the connection's ready instance (replacing
    /// its previous one in place), then returns `CONFIG:SEND_ROUTES_CHANGED` for every
    /// routing subscriber (the connection itself included) and `<m>_MODULE_CONNECTED` for
    /// every connection that requires the module.
    ///
    /// The declaration is stored as sent, except (as the real service does) that a `grpc`
    /// module's endpoints without an HTTP method get `POST`. An **empty** transport is left
    /// empty (the real service stores `grpc`, but it did not exist in the reference version
    /// whose frames we replay: keeping it empty keeps the routing table byte-identical for the
    /// reference client, which never sends the field).
    ///
    /// The declaration is refused when it breaks the [`Limits`]: over
    /// [`Limits::max_endpoints`] endpoints or [`Limits::max_declaration_len`] bytes, or when
    /// the routing table or the module's address list with it would not fit a frame of
    /// [`Limits::max_frame_len`] bytes (every client that wants routes would then fail its
    /// handshake). The instance it replaces, if any, stays.
    ///
    /// # Errors
    /// [`HandleError`] for a payload that is not a `BackendDeclaration`, a declaration over the
    /// limits, or an unknown connection; nothing changes then.
    pub fn module_ready(
        &mut self,
        conn: ConnId,
        data: &[u8],
    ) -> Result<Vec<Notification>, HandleError> {
        let mut declaration = payload::decode_backend_declaration(data)?;
        let entry = self
            .conns
            .get(&conn)
            .ok_or(HandleError::UnknownConnection(conn))?;
        let limits = self.limits;
        if declaration.endpoints.len() > limits.max_endpoints {
            return Err(HandleError::TooManyEndpoints {
                count: declaration.endpoints.len(),
                max: limits.max_endpoints,
            });
        }
        if declaration.transport == GRPC_TRANSPORT {
            for endpoint in &mut declaration.endpoints {
                if endpoint.http_method.is_empty() {
                    "POST".clone_into(&mut endpoint.http_method);
                }
            }
        }
        let json = Bytes::from(declaration.to_json());
        if json.len() > limits.max_declaration_len {
            return Err(HandleError::DeclarationTooLarge {
                len: json.len(),
                max: limits.max_declaration_len,
            });
        }
        // The routing table and the module's address list as they would be with it.
        let old = entry.instance.as_deref();
        let count = self.ready.len() + usize::from(old.is_none());
        let json_len = self.ready_json_len - old.map_or(0, |i| i.json.len()) + json.len();
        let routes = frame_len(
            event::CONFIG_SEND_ROUTES_WHEN_CONNECTED,
            Self::routing_len(json_len, count),
        );
        if routes > limits.max_frame_len {
            return Err(HandleError::FrameTooLarge {
                what: "routing table",
                len: routes,
                max: limits.max_frame_len,
            });
        }
        let address_len = address_json_len(&declaration.address);
        let addresses = self.addresses_len_with(&entry.module, old, address_len);
        let addresses = frame_len(&event::module_connected(&entry.module), addresses);
        if addresses > limits.max_frame_len {
            return Err(HandleError::FrameTooLarge {
                what: "address list",
                len: addresses,
                max: limits.max_frame_len,
            });
        }
        let Some(entry) = self.conns.get_mut(&conn) else {
            return Err(HandleError::UnknownConnection(conn));
        };
        let (seq, old_address_len) = match &entry.instance {
            Some(instance) => (instance.seq, instance.address_len),
            None => {
                self.next_seq += 1;
                (self.next_seq, 0)
            }
        };
        self.ready_json_len = json_len;
        entry.instance = Some(Box::new(Instance {
            seq,
            declaration,
            json,
            address_len,
        }));
        let module = entry.module.clone();
        self.ready.insert(seq, conn);
        let entry = self.modules.entry(module.clone()).or_default();
        entry.instances.insert(seq, conn);
        entry.addresses_len = entry.addresses_len - old_address_len + address_len;
        Ok(self.instances_changed(&module))
    }

    /// The connection is gone: its ready instance is dropped and its subscriptions end. If it
    /// was ready, returns the same notifications as [`ClusterState::module_ready`] (to the
    /// remaining subscribers). Disconnecting an unknown id does nothing.
    ///
    /// When it was the module's last connection and the module has neither a config nor a
    /// schema (it never sent `MODULE:SEND_CONFIG_SCHEMA` and no config was set for it), the
    /// module is forgotten: [`ClusterState::module_names`] no longer lists it.
    pub fn disconnect(&mut self, conn: ConnId) -> Vec<Notification> {
        let Some(entry) = self.conns.remove(&conn) else {
            return Vec::new();
        };
        self.routing_subscribers.remove(&conn);
        for required in &entry.required {
            if let Some(set) = self.dependents.get_mut(required) {
                set.remove(&conn);
                if set.is_empty() {
                    self.dependents.remove(required);
                }
            }
        }
        let Some(module) = self.modules.get_mut(&entry.module) else {
            return Vec::new();
        };
        module.connections.remove(&conn);
        module.config_subscribers.remove(&conn);
        if let Some(instance) = &entry.instance {
            module.instances.remove(&instance.seq);
            module.addresses_len -= instance.address_len;
            self.ready.remove(&instance.seq);
            self.ready_json_len -= instance.json.len();
        }
        // A module that has nothing left to remember is forgotten, so peers that connect under
        // ever new names do not grow the state; one with a config or a schema stays (as in the
        // real service).
        if module.connections.is_empty() && module.config.is_none() && module.schema.is_none() {
            self.modules.remove(&entry.module);
        }
        match entry.instance {
            Some(_) => self.instances_changed(&entry.module),
            None => Vec::new(),
        }
    }

    // ----- getters -----

    /// The names of the known modules, sorted: those with an open connection, a config or a
    /// schema (see [`ClusterState::disconnect`]).
    #[must_use]
    pub fn module_names(&self) -> Vec<String> {
        self.modules.keys().cloned().collect()
    }

    /// Everything known of `module`.
    #[must_use]
    pub fn module(&self, module: &str) -> Option<ModuleSnapshot> {
        let entry = self.modules.get(module)?;
        Some(ModuleSnapshot {
            name: module.to_owned(),
            connections: entry.connections.iter().copied().collect(),
            ready: self.ready_instances(module),
            config: entry.config.clone(),
            schema: entry.schema.as_ref().map(|s| s.stored.clone()),
        })
    }

    /// The module's active config.
    #[must_use]
    pub fn active_config(&self, module: &str) -> Option<ActiveConfig> {
        self.modules.get(module)?.config.clone()
    }

    /// The module's stored schema.
    #[must_use]
    pub fn schema(&self, module: &str) -> Option<StoredSchema> {
        Some(self.modules.get(module)?.schema.as_ref()?.stored.clone())
    }

    /// The module's ready instances, newest first.
    #[must_use]
    pub fn ready_instances(&self, module: &str) -> Vec<ReadyInstance> {
        let Some(entry) = self.modules.get(module) else {
            return Vec::new();
        };
        entry
            .instances
            .values()
            .rev()
            .filter_map(|conn| self.instance_of(*conn))
            .collect()
    }

    /// Every ready instance, newest first: the routing table.
    #[must_use]
    pub fn routing_table(&self) -> Vec<ReadyInstance> {
        self.ready
            .values()
            .rev()
            .filter_map(|conn| self.instance_of(*conn))
            .collect()
    }

    /// The open connections of `module`, ascending.
    #[must_use]
    pub fn connections_of(&self, module: &str) -> Vec<ConnId> {
        self.modules
            .get(module)
            .map(|m| m.connections.iter().copied().collect())
            .unwrap_or_default()
    }

    /// What is known of an open connection.
    #[must_use]
    pub fn connection(&self, conn: ConnId) -> Option<ConnectionInfo> {
        let entry = self.conns.get(&conn)?;
        Some(ConnectionInfo {
            id: conn,
            module: entry.module.clone(),
            peer: entry.peer.clone(),
            ready: entry.instance.as_ref().map(|i| i.declaration.clone()),
            required_modules: entry.required.clone(),
            wants_routes: entry.routes,
            config_subscribed: entry.config_subscribed,
        })
    }

    /// The number of open connections.
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Every open connection id, ascending.
    #[must_use]
    pub fn connection_ids(&self) -> Vec<ConnId> {
        let mut ids: Vec<ConnId> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    // ----- internals -----

    fn instance_of(&self, conn: ConnId) -> Option<ReadyInstance> {
        let instance = self.conns.get(&conn)?.instance.as_ref()?;
        Some(ReadyInstance {
            conn,
            declaration: instance.declaration.clone(),
        })
    }

    /// The notifications for "the ready instances of `module` changed".
    fn instances_changed(&self, module: &str) -> Vec<Notification> {
        let mut notifications = Vec::new();
        if !self.routing_subscribers.is_empty() {
            notifications.push(Notification::new(
                event::CONFIG_SEND_ROUTES_CHANGED,
                self.routing_payload(),
                self.routing_subscribers.iter().copied().collect(),
            ));
        }
        if let Some(dependents) = self.dependents.get(module)
            && !dependents.is_empty()
        {
            notifications.push(Notification::new(
                event::module_connected(module),
                self.addresses_payload(module),
                dependents.iter().copied().collect(),
            ));
        }
        notifications
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::UpdateMode::Unsafe;
    use crate::state::test_support::{SCHEMA, ready_json, set};

    #[test]
    fn malformed_payloads_are_refused_without_change() {
        let mut s = ClusterState::new();
        s.connect(ConnId(1), "A", "p");
        let err = s.config_schema(ConnId(1), b"{not json").unwrap_err();
        assert!(
            err.to_string().starts_with("unmarshal event data: "),
            "{err}"
        );
        assert!(s.active_config("A").is_none());
        assert!(s.module_requirements(ConnId(1), b"[1]").is_err());
        assert!(s.module_ready(ConnId(1), b"").is_err());
        assert!(s.ready_instances("A").is_empty());
        assert!(matches!(
            s.module_ready(ConnId(9), ready_json("A", "1").as_bytes()),
            Err(HandleError::UnknownConnection(ConnId(9)))
        ));
        // The payload is checked before the connection.
        assert!(matches!(
            s.module_ready(ConnId(9), b""),
            Err(HandleError::Payload(_))
        ));
    }

    #[test]
    fn requirements_answer_each_module_once_then_routes() {
        let mut s = ClusterState::new();
        s.connect(ConnId(1), "A", "p");
        s.module_ready(ConnId(1), ready_json("A", "10.0.0.1").as_bytes())
            .unwrap();
        s.connect(ConnId(2), "B", "p");
        let n = s
            .module_requirements(
                ConnId(2),
                br#"{"requiredModules":["A","C","A"],"requireRoutes":true}"#,
            )
            .unwrap();
        let events: Vec<&str> = n.iter().map(|n| n.event.as_str()).collect();
        assert_eq!(
            events,
            [
                "A_MODULE_CONNECTED",
                "C_MODULE_CONNECTED",
                event::CONFIG_SEND_ROUTES_WHEN_CONNECTED
            ]
        );
        assert_eq!(&n[0].payload[..], br#"[{"ip":"10.0.0.1","port":"9999"}]"#);
        assert_eq!(&n[1].payload[..], b"[]");
        assert_eq!(
            n[2].payload,
            payload::encode_routing_config(&[payload::decode_backend_declaration(
                ready_json("A", "10.0.0.1").as_bytes()
            )
            .unwrap()])
        );
        let info = s.connection(ConnId(2)).unwrap();
        assert_eq!(info.required_modules, ["A", "C"]);
        assert!(info.wants_routes);
    }

    #[test]
    fn instances_are_listed_newest_first_and_ready_again_keeps_its_place() {
        let mut s = ClusterState::new();
        for (id, ip) in [(1, "10.0.0.1"), (2, "10.0.0.2"), (3, "10.0.0.3")] {
            s.connect(ConnId(id), "A", "p");
            s.module_ready(ConnId(id), ready_json("A", ip).as_bytes())
                .unwrap();
        }
        let ips = |s: &ClusterState| -> Vec<String> {
            s.ready_instances("A")
                .into_iter()
                .map(|i| i.declaration.address.ip)
                .collect()
        };
        assert_eq!(ips(&s), ["10.0.0.3", "10.0.0.2", "10.0.0.1"]);
        s.module_ready(ConnId(2), ready_json("A", "10.0.0.22").as_bytes())
            .unwrap();
        assert_eq!(ips(&s), ["10.0.0.3", "10.0.0.22", "10.0.0.1"]);
        assert_eq!(s.routing_table().len(), 3);
    }

    #[test]
    fn ready_and_disconnect_notify_routes_then_dependents() {
        let mut s = ClusterState::new();
        s.connect(ConnId(10), "B", "p");
        s.module_requirements(
            ConnId(10),
            br#"{"requiredModules":["A"],"requireRoutes":true}"#,
        )
        .unwrap();
        s.connect(ConnId(11), "C", "p");
        s.module_requirements(ConnId(11), br#"{"requiredModules":["A"]}"#)
            .unwrap();
        s.connect(ConnId(1), "A", "p");
        let n = s
            .module_ready(ConnId(1), ready_json("A", "10.0.0.1").as_bytes())
            .unwrap();
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].event, event::CONFIG_SEND_ROUTES_CHANGED);
        assert_eq!(n[0].recipients, [ConnId(10)]);
        assert_eq!(n[1].event, "A_MODULE_CONNECTED");
        assert_eq!(n[1].recipients, [ConnId(10), ConnId(11)]);

        // A connection that never became ready leaves silently.
        s.connect(ConnId(2), "A", "p");
        assert!(s.disconnect(ConnId(2)).is_empty());

        let n = s.disconnect(ConnId(1));
        assert_eq!(n.len(), 2);
        assert_eq!(&n[0].payload[..], b"[]");
        assert_eq!(&n[1].payload[..], b"[]");
        assert!(s.ready_instances("A").is_empty());
        assert!(
            s.disconnect(ConnId(1)).is_empty(),
            "second disconnect is a no-op"
        );

        // A gone subscriber is not notified any more.
        s.disconnect(ConnId(10));
        s.connect(ConnId(3), "A", "p");
        let n = s
            .module_ready(ConnId(3), ready_json("A", "10.0.0.3").as_bytes())
            .unwrap();
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].recipients, [ConnId(11)]);
    }

    #[test]
    fn grpc_endpoints_get_post_and_empty_transport_stays_empty() {
        let mut s = ClusterState::new();
        s.connect(ConnId(1), "A", "p");
        let grpc = r#"{"moduleName":"A","transport":"grpc","endpoints":[{"path":"x"},{"path":"y","httpMethod":"GET"}],"address":{"ip":"1","port":"2"}}"#;
        s.module_ready(ConnId(1), grpc.as_bytes()).unwrap();
        let d = &s.ready_instances("A")[0].declaration;
        assert_eq!(d.endpoints[0].http_method, "POST");
        assert_eq!(d.endpoints[1].http_method, "GET");

        s.connect(ConnId(2), "B", "p");
        let old =
            r#"{"moduleName":"B","endpoints":[{"path":"x"}],"address":{"ip":"1","port":"2"}}"#;
        s.module_ready(ConnId(2), old.as_bytes()).unwrap();
        let d = &s.ready_instances("B")[0].declaration;
        assert_eq!(d.transport, "");
        assert_eq!(d.endpoints[0].http_method, "");
    }

    #[test]
    fn required_modules_are_answered_in_the_order_given() {
        let mut s = ClusterState::new();
        s.connect(ConnId(1), "B", "p");
        let n = s
            .module_requirements(ConnId(1), br#"{"requiredModules":["C","A","C"]}"#)
            .unwrap();
        let events: Vec<&str> = n.iter().map(|n| n.event.as_str()).collect();
        assert_eq!(events, ["C_MODULE_CONNECTED", "A_MODULE_CONNECTED"]);
        assert_eq!(
            s.connection(ConnId(1)).unwrap().required_modules,
            ["C", "A"]
        );

        // Again, with a known name after a new one: answered in this message's order, each
        // stored once.
        let n = s
            .module_requirements(ConnId(1), br#"{"requiredModules":["D","C"]}"#)
            .unwrap();
        let events: Vec<&str> = n.iter().map(|n| n.event.as_str()).collect();
        assert_eq!(events, ["D_MODULE_CONNECTED", "C_MODULE_CONNECTED"]);
        assert_eq!(
            s.connection(ConnId(1)).unwrap().required_modules,
            ["C", "A", "D"]
        );
    }

    fn requirements(names: impl Iterator<Item = String>) -> Vec<u8> {
        let names: Vec<String> = names.map(|n| format!("{n:?}")).collect();
        format!(r#"{{"requiredModules":[{}]}}"#, names.join(",")).into_bytes()
    }

    #[test]
    fn too_many_required_modules_are_refused_without_change() {
        let mut s = ClusterState::new();
        s.connect(ConnId(1), "B", "p");
        // A 1 MiB frame's worth of names: refused at once, nothing subscribed.
        let huge = requirements((0..250_000).map(|i| format!("m{i}")));
        let err = s.module_requirements(ConnId(1), &huge).unwrap_err();
        assert!(
            matches!(
                err,
                HandleError::TooManyRequiredModules {
                    count: 250_000,
                    max: MAX_REQUIRED_MODULES
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "too many required modules: 250000 (at most 1024)"
        );
        assert!(s.connection(ConnId(1)).unwrap().required_modules.is_empty());
        assert!(s.dependents.is_empty());

        // Exactly the cap is fine; one more distinct module later is not.
        let full = requirements((0..MAX_REQUIRED_MODULES).map(|i| format!("m{i}")));
        assert_eq!(
            s.module_requirements(ConnId(1), &full).unwrap().len(),
            MAX_REQUIRED_MODULES
        );
        let again = requirements(["m0".to_owned(), "m1".to_owned()].into_iter());
        assert_eq!(s.module_requirements(ConnId(1), &again).unwrap().len(), 2);
        let one_more = requirements(["m0".to_owned(), "new".to_owned()].into_iter());
        assert!(matches!(
            s.module_requirements(ConnId(1), &one_more),
            Err(HandleError::TooManyRequiredModules {
                count: 1025,
                max: MAX_REQUIRED_MODULES
            })
        ));
        assert!(!s.dependents.contains_key("new"));
        assert_eq!(
            s.connection(ConnId(1)).unwrap().required_modules.len(),
            MAX_REQUIRED_MODULES
        );
    }

    #[test]
    fn modules_with_nothing_to_remember_are_forgotten_when_their_last_connection_goes() {
        let mut s = ClusterState::new();
        s.connect(ConnId(1), "ephemeral", "p");
        s.connect(ConnId(2), "ephemeral", "p");
        s.module_ready(ConnId(2), ready_json("ephemeral", "1").as_bytes())
            .unwrap();
        s.connect(ConnId(3), "with-schema", "p");
        s.config_schema(ConnId(3), SCHEMA.as_bytes()).unwrap();
        let seeded = set(&mut s, Unsafe, "seeded", b"{}", None).unwrap();
        assert!(seeded.notifications.is_empty());
        s.connect(ConnId(4), "seeded", "p");

        s.disconnect(ConnId(1));
        assert!(s.module("ephemeral").is_some(), "one connection is left");
        for id in 2..=4 {
            s.disconnect(ConnId(id));
        }
        assert_eq!(s.module_names(), ["seeded", "with-schema"]);
        assert!(s.module("ephemeral").is_none());
        assert_eq!(s.active_config("seeded").unwrap().version, 1);
        assert!(s.schema("with-schema").is_some());

        // Many peers under ever new names leave nothing behind.
        for id in 10..1010 {
            s.connect(ConnId(id), &format!("random-{id}"), "p");
            s.module_requirements(ConnId(id), br#"{"requiredModules":["x"]}"#)
                .unwrap();
            s.disconnect(ConnId(id));
        }
        assert_eq!(s.module_names().len(), 2);
        assert!(s.dependents.is_empty());
    }
}
