//! Golden tests: the frames captured between the real Go client and a server on the real ETP
//! library (`fixtures/etp/*.jsonl`) decode into our types and re-encode byte for byte.

use bytes::Bytes;
use cluster_proto::event;
use cluster_proto::frame::{self, Frame};
use cluster_proto::payload::{
    self, AddressConfiguration, BackendDeclaration, ConfigData, EndpointDescriptor,
    MetricsAutodiscovery, ModuleDependency, ModuleInfo, ModuleRequirements,
};
use cluster_proto::secrets::SecretMasker;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashMap};

const SESSION: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../fixtures/etp/go-session-frames.jsonl"
);
const ERRORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../fixtures/etp/go-error-frames.jsonl"
);

#[derive(Debug, Deserialize)]
struct Line {
    conn: u32,
    dir: String,
    msg: Option<String>,
}

/// The WebSocket messages of a capture: `(connection, direction, message)`.
fn messages(path: &str) -> Vec<(u32, String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Line>(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .filter_map(|l| match (l.dir.as_str(), l.msg) {
            ("c2s" | "s2c", Some(msg)) => Some((l.conn, l.dir, msg)),
            _ => None,
        })
        .collect()
}

/// What the golden check saw, to prove that every kind of payload was exercised.
#[derive(Debug, Default)]
struct Seen {
    by_kind: BTreeMap<&'static str, usize>,
}

impl Seen {
    fn hit(&mut self, kind: &'static str) {
        *self.by_kind.entry(kind).or_default() += 1;
    }
}

fn assert_reencodes<T: serde::Serialize>(value: &T, data: &[u8], what: &str) {
    let again = serde_json::to_vec(value).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&again),
        String::from_utf8_lossy(data),
        "{what} does not re-encode byte for byte"
    );
}

/// Decodes every frame and payload of a capture, checks the byte-for-byte re-encoding, and
/// that every ack answers an event of the same id sent the other way.
fn check_capture(path: &str) -> Seen {
    let mut seen = Seen::default();
    // (conn, direction of the event, ack id) -> event name, for matching acks.
    let mut pending: HashMap<(u32, String, u64), String> = HashMap::new();
    for (conn, dir, msg) in messages(path) {
        let frame = Frame::decode(Bytes::from(msg.clone()))
            .unwrap_or_else(|e| panic!("{msg:?} does not decode: {e}"));

        let mut again = Vec::new();
        frame::encode(frame.name(), frame.ack_id(), frame.data(), &mut again);
        assert_eq!(String::from_utf8(again).unwrap(), msg, "frame re-encoding");
        assert_eq!(frame.encoded_len(), msg.len());

        let data = &frame.data()[..];
        if let Some(acked) = frame.acked_event() {
            let other = if dir == "c2s" { "s2c" } else { "c2s" };
            let key = (conn, other.to_owned(), frame.ack_id());
            assert_eq!(pending.remove(&key).as_deref(), Some(acked), "{msg}");
            assert!(std::str::from_utf8(data).is_ok());
            seen.hit("ack");
            continue;
        }
        if frame.ack_id() > 0 {
            pending.insert((conn, dir.clone(), frame.ack_id()), frame.name().to_owned());
        }
        match frame.name() {
            event::MODULE_SEND_CONFIG_SCHEMA => {
                assert_eq!(dir, "c2s");
                let decoded = payload::decode_config_data(data).unwrap();
                assert_reencodes(&decoded, data, "ConfigData");
                assert_eq!(decoded.to_json(), data);
                seen.hit("config schema");
            }
            event::MODULE_SEND_REQUIREMENTS => {
                assert_eq!(dir, "c2s");
                let decoded = payload::decode_module_requirements(data).unwrap();
                assert_reencodes(&decoded, data, "ModuleRequirements");
                seen.hit("requirements");
            }
            event::MODULE_READY => {
                assert_eq!(dir, "c2s");
                let decoded = payload::decode_backend_declaration(data).unwrap();
                assert_reencodes(&decoded, data, "BackendDeclaration");
                seen.hit("ready");
            }
            event::CONFIG_SEND_ROUTES_WHEN_CONNECTED | event::CONFIG_SEND_ROUTES_CHANGED => {
                assert_eq!(dir, "s2c");
                let decoded = payload::decode_routing_config(data).unwrap();
                assert!(!decoded.is_empty());
                assert_reencodes(&decoded, data, "RoutingConfig");
                assert_eq!(payload::encode_routing_config(&decoded), data);
                seen.hit("routes");
            }
            event::CONFIG_SEND_CONFIG_WHEN_CONNECTED | event::CONFIG_SEND_CONFIG_CHANGED => {
                assert_eq!(dir, "s2c");
                // The remote config travels raw: it must be one JSON object, kept as is.
                let raw: Box<RawValue> = serde_json::from_slice(data).unwrap();
                assert_eq!(raw.get().as_bytes(), data);
                assert!(raw.get().starts_with('{'));
                seen.hit("config");
            }
            event::ERROR_CONNECTION | event::ERROR_CONFIG => {
                assert_eq!(dir, "s2c");
                assert!(!data.is_empty());
                seen.hit("error");
            }
            name => {
                let module = event::connected_module(name)
                    .unwrap_or_else(|| panic!("unexpected event {name}"));
                assert_eq!(dir, "s2c");
                assert_eq!(event::module_connected(module), name);
                let decoded = payload::decode_addresses(data).unwrap();
                assert_reencodes(&decoded, data, "address list");
                assert_eq!(payload::encode_addresses(&decoded), data);
                seen.hit("addresses");
            }
        }
    }
    assert!(pending.is_empty(), "events never acked: {pending:?}");
    seen
}

#[test]
fn session_capture_round_trips() {
    let seen = check_capture(SESSION);
    for kind in [
        "ack",
        "config schema",
        "requirements",
        "ready",
        "routes",
        "config",
        "error",
        "addresses",
    ] {
        assert!(
            seen.by_kind.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} in {seen:?}"
        );
    }
    // 3 connections × 3 acked events.
    assert_eq!(seen.by_kind["ack"], 9);
}

#[test]
fn error_capture_round_trips() {
    let seen = check_capture(ERRORS);
    assert_eq!(seen.by_kind["config schema"], 2);
    assert_eq!(seen.by_kind["ack"], 4);
}

/// The data of the first `c2s`/`s2c` frame of connection `conn` named `name`.
fn golden_data(path: &str, conn: u32, name: &str) -> Vec<u8> {
    messages(path)
        .into_iter()
        .filter(|(c, _, _)| *c == conn)
        .map(|(_, _, msg)| Frame::decode(Bytes::from(msg)).unwrap())
        .find(|f| f.name() == name)
        .unwrap_or_else(|| panic!("no {name} on connection {conn}"))
        .data()
        .to_vec()
}

fn module_b() -> ModuleInfo {
    ModuleInfo {
        module_name: "B".into(),
        module_version: "1.0.0".into(),
        lib_version: "1.0.0".into(),
        grpc_outer_address: AddressConfiguration::new("127.0.9.3", "8000"),
        endpoints: vec![EndpointDescriptor::new("b/api/x")],
        ..ModuleInfo::default()
    }
}

const SCHEMA: &str = r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","properties":{"someString":{"type":"string"}}}"#;

#[test]
fn built_payloads_match_what_the_go_client_sent() {
    // Connection 3 is module B: requires A and C, wants routes, has secrets in its default config.
    let config = ConfigData::from_json(
        "1.0.0",
        SCHEMA,
        r#"{"db":{"password":"p@ss","host":"h"},"token":"t"}"#,
    )
    .unwrap();
    assert_eq!(
        config.to_json(),
        golden_data(SESSION, 3, event::MODULE_SEND_CONFIG_SCHEMA)
    );

    let requirements = ModuleRequirements {
        required_modules: vec!["A".into(), "C".into()],
        require_routes: true,
    };
    assert_eq!(
        requirements.to_json(),
        golden_data(SESSION, 3, event::MODULE_SEND_REQUIREMENTS)
    );
    assert_eq!(
        ModuleRequirements::default().to_json(),
        golden_data(SESSION, 1, event::MODULE_SEND_REQUIREMENTS)
    );

    let ready = module_b().backend_declaration(&requirements.required_modules);
    assert_eq!(
        ready.to_json(),
        golden_data(SESSION, 3, event::MODULE_READY)
    );

    // Connection 2: module A with no endpoints sends `endpoints: null`, `requiredModules: []`.
    let a2 = ModuleInfo {
        module_name: "A".into(),
        module_version: "1.0.0".into(),
        lib_version: "1.0.0".into(),
        grpc_outer_address: AddressConfiguration::new("127.0.9.2", "9999"),
        ..ModuleInfo::default()
    };
    assert_eq!(
        a2.backend_declaration(Vec::<String>::new()).to_json(),
        golden_data(SESSION, 2, event::MODULE_READY)
    );
}

#[test]
fn routes_decode_to_the_declarations_sent() {
    let routes =
        payload::decode_routing_config(&golden_data(SESSION, 3, event::CONFIG_SEND_ROUTES_CHANGED))
            .unwrap();
    assert_eq!(routes.len(), 3);
    assert_eq!(routes[0], module_b().backend_declaration(["A", "C"]));
    assert_eq!(
        routes[1].address,
        AddressConfiguration::new("127.0.9.2", "9999")
    );
    assert!(routes[1].endpoints.is_empty());
    let paths: Vec<_> = routes[2]
        .endpoints
        .iter()
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(paths, ["a/api/one", "a/api/two"]);
    assert!(routes[2].endpoints.iter().all(|e| e.extra.is_none()));

    let hosts = payload::decode_addresses(&golden_data(SESSION, 3, "A_MODULE_CONNECTED")).unwrap();
    let hosts: Vec<_> = hosts.iter().map(ToString::to_string).collect();
    assert_eq!(hosts, ["127.0.9.2:9999", "127.0.9.1:9999"]);
    assert!(
        payload::decode_addresses(&golden_data(SESSION, 3, "C_MODULE_CONNECTED"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn config_with_separators_inside_keeps_them() {
    let data = golden_data(SESSION, 3, event::CONFIG_SEND_CONFIG_CHANGED);
    assert_eq!(data, br#"{"someString":"value","nested":{"a||b":"x||y"}}"#);
}

#[test]
fn default_config_secrets_are_masked() {
    let data = golden_data(SESSION, 3, event::CONFIG_SEND_CONFIG_WHEN_CONNECTED);
    let logged = SecretMasker::new().mask(&data);
    assert_eq!(
        logged,
        r#"{"db":{"host":"h","password":"***"},"token":"***"}"#
    );
    assert!(!logged.contains("p@ss"));
}

#[test]
fn decodes_pascal_case() {
    let pascal = br#"{"ModuleName":"B","Version":"1.0.0","LibVersion":"1.0.0","Transport":"http",
        "Endpoints":[{"Path":"b/api/x","Inner":true,"UserAuthRequired":true,"HttpMethod":"GET",
                      "Extra":{"reqAdminPerm":"p"}}],
        "RequiredModules":[{"Name":"A","Required":true}],
        "Address":{"IP":"127.0.0.1","Port":"8000"},
        "MetricsAutodiscovery":{"Address":"127.0.0.1:9090","Labels":{"env":"dev"}}}"#;
    let camel = br#"{"moduleName":"B","version":"1.0.0","libVersion":"1.0.0","transport":"http",
        "endpoints":[{"path":"b/api/x","inner":true,"userAuthRequired":true,"httpMethod":"GET",
                      "extra":{"reqAdminPerm":"p"}}],
        "requiredModules":[{"name":"A","required":true}],
        "address":{"ip":"127.0.0.1","port":"8000"},
        "metricsAutodiscovery":{"address":"127.0.0.1:9090","labels":{"env":"dev"}}}"#;
    let from_pascal = payload::decode_backend_declaration(pascal).unwrap();
    let from_camel = payload::decode_backend_declaration(camel).unwrap();
    assert_eq!(from_pascal, from_camel);
    assert_eq!(from_pascal.transport, "http");
    assert_eq!(from_pascal.endpoints[0].admin_permission(), Some("p"));
    assert!(from_pascal.endpoints[0].inner && from_pascal.endpoints[0].user_auth_required);
    assert_eq!(from_pascal.address.ip, "127.0.0.1");
    assert_eq!(
        from_pascal.metrics_autodiscovery.as_ref().unwrap().labels["env"],
        "dev"
    );

    let c = payload::decode_config_data(br#"{"Version":"2","Schema":{"a":1},"Config":[1, 2]}"#)
        .unwrap();
    assert_eq!(
        (c.version.as_str(), c.schema.get(), c.config.get()),
        ("2", r#"{"a":1}"#, "[1, 2]")
    );
    let r =
        payload::decode_module_requirements(br#"{"RequiredModules":["X"],"RequireRoutes":true}"#)
            .unwrap();
    assert_eq!(r.required_modules, ["X"]);
    assert!(r.require_routes);
}

#[test]
fn null_decodes_as_empty() {
    let decl = payload::decode_backend_declaration(
        br#"{"moduleName":null,"version":null,"libVersion":null,"transport":null,"endpoints":null,
             "requiredModules":null,"address":null,"metricsAutodiscovery":null}"#,
    )
    .unwrap();
    assert_eq!(decl, BackendDeclaration::default());

    let e: EndpointDescriptor = serde_json::from_slice(
        br#"{"path":null,"inner":null,"userAuthRequired":null,"httpMethod":null,"extra":null}"#,
    )
    .unwrap();
    assert_eq!(e, EndpointDescriptor::default());

    let m: MetricsAutodiscovery =
        serde_json::from_slice(br#"{"address":null,"labels":null}"#).unwrap();
    assert_eq!(m, MetricsAutodiscovery::default());
    let d: ModuleDependency = serde_json::from_slice(br#"{"name":null,"required":null}"#).unwrap();
    assert_eq!(d, ModuleDependency::default());
    let a = payload::decode_addresses(br#"[{"ip":null,"port":null}]"#).unwrap();
    assert_eq!(a, [AddressConfiguration::default()]);
    let r =
        payload::decode_module_requirements(br#"{"requiredModules":null,"requireRoutes":null}"#)
            .unwrap();
    assert_eq!(r, ModuleRequirements::default());
    let c =
        payload::decode_config_data(br#"{"version":null,"schema":null,"config":null}"#).unwrap();
    assert_eq!(
        c.to_json(),
        br#"{"version":"","schema":null,"config":null}"#
    );

    // Missing fields decode as empty too.
    assert_eq!(
        payload::decode_backend_declaration(b"{}").unwrap(),
        BackendDeclaration::default()
    );
}

#[test]
fn unknown_fields_are_ignored() {
    let decl = payload::decode_backend_declaration(
        br#"{"moduleName":"A","future":{"x":[1,2]},"endpoints":[{"path":"p","handler":"h","new":1}],
             "address":{"ip":"1.2.3.4","port":"1","zone":"z"},"requiredModules":[{"name":"B","why":"?"}]}"#,
    )
    .unwrap();
    assert_eq!(decl.module_name, "A");
    assert_eq!(decl.endpoints, [EndpointDescriptor::new("p")]);
    assert_eq!(decl.address, AddressConfiguration::new("1.2.3.4", "1"));
    assert_eq!(decl.required_modules[0].name, "B");
    let r = payload::decode_module_requirements(br#"{"requireRoutes":true,"extra":null}"#).unwrap();
    assert!(r.require_routes);
}

#[test]
fn newer_fields_are_omitted_when_unset_and_sent_when_set() {
    let unset = module_b().backend_declaration(["A"]).to_json();
    let text = String::from_utf8(unset).unwrap();
    for newer in ["transport", "httpMethod", "metricsAutodiscovery"] {
        assert!(!text.contains(newer), "{newer} in {text}");
    }

    let mut info = module_b();
    info.transport = payload::HTTP_TRANSPORT.into();
    info.endpoints = vec![
        EndpointDescriptor::new("b/api/x")
            .with_http_method("GET")
            .with_admin_permission("admin:read"),
    ];
    info.metrics_autodiscovery = Some(MetricsAutodiscovery {
        address: "127.0.9.3:9100".into(),
        labels: BTreeMap::from([("zone".into(), "a".into()), ("app".into(), "b".into())]),
    });
    let set = info.backend_declaration(["A"]);
    let bytes = set.to_json();
    assert_eq!(
        String::from_utf8(bytes.clone()).unwrap(),
        concat!(
            r#"{"moduleName":"B","version":"1.0.0","libVersion":"1.0.0","transport":"http","#,
            r#""endpoints":[{"path":"b/api/x","inner":false,"userAuthRequired":false,"httpMethod":"GET","extra":{"reqAdminPerm":"admin:read"}}],"#,
            r#""requiredModules":[{"name":"A","required":true}],"address":{"ip":"127.0.9.3","port":"8000"},"#,
            r#""metricsAutodiscovery":{"address":"127.0.9.3:9100","labels":{"app":"b","zone":"a"}}}"#
        )
    );
    assert_eq!(payload::decode_backend_declaration(&bytes).unwrap(), set);

    // Labels, like any Go nil map, are `null` when empty; an empty `extra` map is `{}`.
    let m = MetricsAutodiscovery {
        address: "x".into(),
        labels: BTreeMap::new(),
    };
    assert_eq!(
        serde_json::to_string(&m).unwrap(),
        r#"{"address":"x","labels":null}"#
    );
    let e = EndpointDescriptor {
        extra: Some(serde_json::Map::new()),
        ..EndpointDescriptor::new("p")
    };
    assert_eq!(
        serde_json::to_string(&e).unwrap(),
        r#"{"path":"p","inner":false,"userAuthRequired":false,"extra":{}}"#
    );
}

#[test]
fn malformed_payloads_are_typed_errors() {
    for (bad, kind) in [
        (&b"{"[..], payload::PayloadKind::BackendDeclaration),
        (b"\"A\"", payload::PayloadKind::BackendDeclaration),
        (
            br#"{"moduleName":1}"#,
            payload::PayloadKind::BackendDeclaration,
        ),
        (
            br#"{"endpoints":{}}"#,
            payload::PayloadKind::BackendDeclaration,
        ),
    ] {
        let err = payload::decode_backend_declaration(bad).unwrap_err();
        assert_eq!(err.kind(), kind);
    }
    assert!(payload::decode_config_data(br#"{"schema":}"#).is_err());
    assert!(payload::decode_module_requirements(br#"{"requiredModules":"A"}"#).is_err());
    assert!(payload::decode_routing_config(b"{}").is_err());
    assert!(payload::decode_addresses(br#"[{"ip":"1","port":9999}]"#).is_err());
}
