//! A scripted client replays the real Go client's frames (`fixtures/etp/*.jsonl`) byte for
//! byte and must get the frames the reference server sent: the same events and payloads, in
//! the same order where docs/protocol.md fixes the order (the config before the schema ack), as a
//! multiset where it leaves the order free (the answers to requirements and to READY, the
//! notifications of an instance leaving). Over the in-memory transport and a real WebSocket.

use crate::common::WAIT;
use bytes::Bytes;
use cluster_proto::event;
use cluster_proto::frame::Frame;
use cluster_testkit::{ErrorEvent, FakeConfigService};
use cluster_transport::{Connector, Endpoint, Incoming, Transport};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

const SESSION: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../fixtures/etp/go-session-frames.jsonl"
);
const ERRORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../fixtures/etp/go-error-frames.jsonl"
);

#[derive(Debug, Clone)]
struct Line {
    conn: u64,
    dir: String,
    path: Option<String>,
    msg: Option<String>,
}

fn load(path: &str) -> Vec<Line> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
            Line {
                conn: v["conn"].as_u64().expect("conn"),
                dir: v["dir"].as_str().expect("dir").to_owned(),
                path: v["path"].as_str().map(str::to_owned),
                msg: v["msg"].as_str().map(str::to_owned),
            }
        })
        .collect()
}

fn event_of(msg: &str) -> String {
    Frame::decode(Bytes::copy_from_slice(msg.as_bytes()))
        .expect("fixture frame")
        .name()
        .to_owned()
}

fn is_admin(event: &str) -> bool {
    event == event::CONFIG_SEND_CONFIG_CHANGED
        || event == event::ERROR_CONFIG
        || event == event::ERROR_CONNECTION
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// The answer to a client frame (the event it answers).
    Frame,
    /// An admin action: a config change or an error event (one frame).
    Admin,
    /// The notifications of another connection leaving.
    Leave,
}

#[derive(Debug)]
struct Group {
    cause: Cause,
    /// Whether the order of the frames is fixed by docs/protocol.md.
    ordered: bool,
    frames: Vec<String>,
}

/// The server frames of each connection, cut into groups by what caused them.
fn groups(lines: &[Line]) -> HashMap<u64, VecDeque<Group>> {
    let mut all: HashMap<u64, VecDeque<Group>> = HashMap::new();
    for line in lines {
        let groups = all.entry(line.conn).or_default();
        let Some(msg) = &line.msg else { continue };
        if line.dir == "c2s" {
            groups.push_back(Group {
                cause: Cause::Frame,
                // Only the schema's answer has a fixed order (config, then ack).
                ordered: event_of(msg) == event::MODULE_SEND_CONFIG_SCHEMA,
                frames: Vec::new(),
            });
            continue;
        }
        if is_admin(&event_of(msg)) {
            groups.push_back(Group {
                cause: Cause::Admin,
                ordered: true,
                frames: vec![msg.clone()],
            });
            continue;
        }
        if groups.back().is_none_or(|g| g.cause == Cause::Admin) {
            groups.push_back(Group {
                cause: Cause::Leave,
                ordered: false,
                frames: Vec::new(),
            });
        }
        groups.back_mut().expect("a group").frames.push(msg.clone());
    }
    all
}

struct Raw {
    transport: Transport,
    module: String,
}

impl Raw {
    async fn send(&mut self, text: &str) {
        self.transport
            .sink
            .feed(Bytes::copy_from_slice(text.as_bytes()))
            .await
            .expect("feed");
        self.transport.sink.flush().await.expect("flush");
    }

    async fn recv(&mut self) -> String {
        match tokio::time::timeout(WAIT, self.transport.stream.recv()).await {
            Ok(Ok(Incoming::Text(text))) => String::from_utf8(text.to_vec()).expect("utf-8"),
            other => panic!("expected a frame for {}, got {other:?}", self.module),
        }
    }

    async fn check(&mut self, group: &Group) {
        let mut got = Vec::with_capacity(group.frames.len());
        for _ in 0..group.frames.len() {
            got.push(self.recv().await);
        }
        let mut want = group.frames.clone();
        if !group.ordered {
            got.sort();
            want.sort();
        }
        assert_eq!(got, want, "{} ({:?} group)", self.module, group.cause);
    }

    /// Nothing else was sent: the next frame is the answer to this probe.
    async fn nothing_more(&mut self) {
        self.send("TEST:PROBE||900").await;
        assert_eq!(
            self.recv().await,
            "__ack_TEST:PROBE||900",
            "{}",
            self.module
        );
    }
}

async fn replay(
    service: &FakeConfigService,
    connector: Arc<dyn Connector>,
    host: &str,
    lines: &[Line],
) {
    let endpoint: Endpoint = host.parse().unwrap();
    let mut groups = groups(lines);
    let mut clients: HashMap<u64, Raw> = HashMap::new();
    let mut replayed = 0;
    for line in lines {
        let conn = line.conn;
        match line.dir.as_str() {
            "open" => {
                let path = line.path.as_deref().expect("open has a path");
                let module = path
                    .rsplit_once("module_name=")
                    .expect("module")
                    .1
                    .to_owned();
                let transport = connector
                    .connect(&endpoint, &module)
                    .await
                    .expect("connect");
                clients.insert(conn, Raw { transport, module });
            }
            "c2s" => {
                let client = clients.get_mut(&conn).expect("open");
                client.send(line.msg.as_deref().unwrap()).await;
                let group = groups.get_mut(&conn).unwrap().pop_front().unwrap();
                client.check(&group).await;
                replayed += 1;
            }
            "s2c" => {
                let msg = line.msg.as_deref().unwrap();
                let front = groups.get(&conn).and_then(|g| g.front());
                if !is_admin(&event_of(msg)) {
                    continue; // answered as part of its group
                }
                let group = front.expect("an admin group");
                assert_eq!(group.frames[0], msg);
                let client = clients.get_mut(&conn).unwrap();
                let data = Frame::decode(Bytes::copy_from_slice(msg.as_bytes())).unwrap();
                let text = String::from_utf8(data.data().to_vec()).unwrap();
                match data.name() {
                    event::CONFIG_SEND_CONFIG_CHANGED => {
                        let change = service.set_config(&client.module, text, None).unwrap();
                        assert!(change.changed);
                    }
                    event::ERROR_CONFIG => {
                        service.send_error(&client.module, ErrorEvent::Config, &text);
                    }
                    other => panic!("unexpected admin event {other}"),
                }
                let group = groups.get_mut(&conn).unwrap().pop_front().unwrap();
                client.check(&group).await;
                replayed += 1;
            }
            "close" => {
                let mut client = clients.remove(&conn).expect("open");
                client.nothing_more().await;
                let before = service.connections(&client.module).len();
                client.transport.sink.close(1000, "").await.expect("close");
                service
                    .wait_connections(&client.module, before - 1, WAIT)
                    .await
                    .unwrap();
                // Whoever was told of this connection's instance is told it left.
                for (other, pending) in &mut groups {
                    if pending.front().is_some_and(|g| g.cause == Cause::Leave) {
                        let group = pending.pop_front().unwrap();
                        clients.get_mut(other).unwrap().check(&group).await;
                        replayed += 1;
                    }
                }
            }
            other => panic!("unknown fixture line kind {other}"),
        }
    }
    let left: Vec<_> = groups.iter().filter(|(_, g)| !g.is_empty()).collect();
    assert!(left.is_empty(), "groups not replayed: {left:?}");
    assert!(replayed > 0);
}

#[tokio::test]
async fn go_session_replays_in_memory() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    replay(&service, connector, &host, &load(SESSION)).await;
    assert!(service.routing_table().is_empty());
    assert_eq!(service.connection_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_session_replays_over_websocket() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::ws(&service).await;
    replay(&service, connector, &host, &load(SESSION)).await;
    // What the replay left behind: B's config changed once, schemas with their versions.
    let config = service.active_config("B").unwrap();
    assert_eq!(config.version, 2);
    assert_eq!(
        &config.data[..],
        br#"{"someString":"value","nested":{"a||b":"x||y"}}"#
    );
    assert_eq!(service.schema("A").unwrap().module_version, "1.0.0");
    assert_eq!(service.modules(), ["A", "B"]);
}

/// Module D of the error capture: its application rejects the initial config, so the Go
/// client leaves after the requirements, before `MODULE:READY`. It leaves nothing behind.
/// (Module C of that capture needs config variables, which the fake does not support.)
#[tokio::test]
async fn client_leaving_before_ready_replays_and_leaves_nothing() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    let lines: Vec<Line> = load(ERRORS).into_iter().filter(|l| l.conn == 2).collect();
    assert!(lines.len() > 3, "fixture has module D");
    replay(&service, connector, &host, &lines).await;
    assert!(service.ready_instances("D").is_empty());
    assert!(service.connections("D").is_empty());
    assert_eq!(service.active_config("D").unwrap().version, 1);
}
