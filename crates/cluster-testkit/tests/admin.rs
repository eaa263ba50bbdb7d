//! The admin HTTP API over real HTTP on 127.0.0.1, with modules connected over a real
//! WebSocket through the transport runtime; and the `fake-config-service` binary as a process.

mod common;

use cluster_proto::payload::{BackendDeclaration, MetricsAutodiscovery};
use cluster_testkit::FakeConfigService;
use cluster_testkit::declared::instance;
use cluster_transport::Connector;
use common::{ChildGuard, Client, bound_addresses, requirements_payload, spawn_service_binary};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(10);

const SCHEMA: &str = r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"object","properties":{"port":{"type":"integer"},"name":{"type":"string"}}}"#;

fn schema_payload(config: &str) -> String {
    format!(r#"{{"version":"2.1.0","schema":{SCHEMA},"config":{config}}}"#)
}

fn ready_payload(module: &str, ip: &str, endpoints: &str) -> String {
    format!(
        r#"{{"moduleName":"{module}","version":"2.1.0","libVersion":"1.0.0","endpoints":{endpoints},"requiredModules":[],"address":{{"ip":"{ip}","port":"9000"}}}}"#
    )
}

// ----- a minimal HTTP/1.1 client -----

struct HttpResponse {
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
}

impl HttpResponse {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request on a fresh connection (`Connection: close`), read to the end.
async fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> HttpResponse {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("write");
        stream.write_all(body).await.expect("write");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        raw
    };
    let raw = tokio::time::timeout(WAIT, exchange)
        .await
        .expect("HTTP exchange timed out");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of the response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let mut content_type = None;
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':').expect("header");
        match name.to_ascii_lowercase().as_str() {
            "content-type" => content_type = Some(value.trim().to_owned()),
            "content-length" => length = value.trim().parse::<usize>().ok(),
            "transfer-encoding" => panic!("chunked responses are not expected here"),
            _ => {}
        }
    }
    let body = raw[split + 4..].to_vec();
    assert_eq!(length, Some(body.len()), "content-length of {head}");
    HttpResponse {
        status,
        content_type,
        body,
    }
}

// ----- the service, its admin API and raw module clients -----

struct Harness {
    service: FakeConfigService,
    connector: Arc<dyn Connector>,
    host: String,
    admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Harness {
    async fn start() -> Self {
        let service = FakeConfigService::new();
        let (connector, host) = common::ws(&service).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("admin listener");
        let admin = listener.local_addr().expect("admin addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(cluster_testkit::admin::serve(
            listener,
            service.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            service,
            connector,
            host,
            admin,
            stop: Some(stop),
            server: Some(server),
        }
    }

    async fn get(&self, path: &str) -> HttpResponse {
        http(self.admin, "GET", path, b"").await
    }

    async fn put(&self, path: &str, body: &str) -> HttpResponse {
        http(self.admin, "PUT", path, body.as_bytes()).await
    }

    async fn post(&self, path: &str, body: &str) -> HttpResponse {
        http(self.admin, "POST", path, body.as_bytes()).await
    }

    /// A raw ETP client of `module`, connected over WebSocket.
    async fn module(&self, module: &str) -> Client {
        Client::connect(&self.connector, &self.host, module).await
    }

    /// A module that went through the Go client's handshake: schema, requirements (`required`
    /// modules, and routes if `routes`), ready.
    async fn ready_module(
        &self,
        module: &str,
        ip: &str,
        required: &[&str],
        routes: bool,
    ) -> Client {
        let mut client = self.module(module).await;
        assert_eq!(
            client
                .ack(
                    "MODULE:SEND_CONFIG_SCHEMA",
                    &schema_payload(r#"{"port":1}"#)
                )
                .await,
            "ok"
        );
        assert_eq!(
            client.expect("CONFIG:SEND_CONFIG_WHEN_CONNECTED").await,
            r#"{"port":1}"#
        );
        assert_eq!(
            client
                .ack(
                    "MODULE:SEND_REQUIREMENTS",
                    requirements_payload(required, routes)
                )
                .await,
            "ok"
        );
        assert_eq!(
            client
                .ack("MODULE:READY", &ready_payload(module, ip, "null"))
                .await,
            "ok"
        );
        client
    }

    /// Stops the admin server gracefully; it must end without error.
    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let ended = tokio::time::timeout(WAIT, server)
                .await
                .expect("admin server did not stop");
            ended.expect("admin task").expect("admin server error");
        }
        self.service.stop().await;
    }
}

// ----- our routes -----

#[tokio::test]
async fn modules_lists_connections_instances_config_and_schema() {
    let h = Harness::start().await;
    assert_eq!(h.get("/modules").await.json(), json!([]));
    let _a = h.ready_module("A", "10.0.0.1", &["B"], true).await;
    let _pending = h.module("B").await;
    h.service
        .wait_connections("B", 1, WAIT)
        .await
        .expect("B connected");

    let response = h.get("/modules").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.content_type.as_deref(), Some("application/json"));
    let modules = response.json();
    let a_id = h.service.connections("A")[0].id.0;
    assert_eq!(
        modules[0],
        json!({
            "name": "A",
            "connections": [{
                "id": a_id,
                "peer": h.service.connections("A")[0].peer,
                "ready": true,
                "requiredModules": ["B"],
                "requireRoutes": true,
                "configSubscribed": true,
            }],
            "instances": [serde_json::from_str::<Value>(&ready_payload("A", "10.0.0.1", "null")).unwrap()],
            "configVersion": 1,
            "config": {"port": 1},
            "schema": serde_json::from_str::<Value>(SCHEMA).unwrap(),
            "moduleVersion": "2.1.0",
        })
    );
    // B connected but said nothing yet.
    assert_eq!(modules[1]["name"], "B");
    assert_eq!(modules[1]["connections"][0]["ready"], false);
    assert_eq!(modules[1]["instances"], json!([]));
    assert_eq!(modules[1]["config"], Value::Null);
    assert_eq!(modules[1]["configVersion"], Value::Null);
    assert_eq!(modules.as_array().map(Vec::len), Some(2));
    h.shutdown().await;
}

#[tokio::test]
async fn config_is_served_raw_and_unknown_modules_are_404() {
    let h = Harness::start().await;
    let _a = h.ready_module("A", "10.0.0.1", &[], false).await;
    let response = h.get("/modules/A/config").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.content_type.as_deref(), Some("application/json"));
    assert_eq!(response.text(), r#"{"port":1}"#);

    // Byte for byte, spacing and key order included.
    let spaced = r#"{ "name" : "x",  "port": 2 }"#;
    assert_eq!(h.put("/modules/A/config", spaced).await.status, 200);
    assert_eq!(h.get("/modules/A/config").await.text(), spaced);

    let unknown = h.get("/modules/nobody/config").await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.json()["error"].as_str().unwrap().contains("nobody"));

    let _silent = h.module("Silent").await;
    h.service.wait_connections("Silent", 1, WAIT).await.unwrap();
    let no_config = h.get("/modules/Silent/config").await;
    assert_eq!(no_config.status, 404);
    assert!(
        no_config.json()["error"]
            .as_str()
            .unwrap()
            .contains("no config")
    );
    h.shutdown().await;
}

#[tokio::test]
async fn put_config_reaches_the_module_and_refuses_what_it_must() {
    let h = Harness::start().await;
    let mut a = h.ready_module("A", "10.0.0.1", &[], false).await;

    let new = r#"{"port":2,"name":"a||b"}"#;
    let response = h.put("/modules/A/config?version=1", new).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.json(),
        json!({"version": 2, "changed": true, "notified": 1})
    );
    assert_eq!(a.expect("CONFIG:SEND_CONFIG_CHANGED").await, new);

    // A stale version: 409, nothing sent, nothing changed.
    let stale = h.put("/modules/A/config?version=1", r#"{"port":3}"#).await;
    assert_eq!(stale.status, 409);
    assert_eq!(stale.json()["activeVersion"], 2);
    assert!(stale.json()["error"].as_str().unwrap().contains("version"));

    // The schema refuses it: 400 with the issues.
    let invalid = h.put("/modules/A/config", r#"{"port":"eighty"}"#).await;
    assert_eq!(invalid.status, 400);
    let body = invalid.json();
    assert_eq!(body["issues"][0]["instancePath"], "/port");
    assert!(
        body["issues"][0]["message"]
            .as_str()
            .unwrap()
            .contains("integer")
    );

    // Not a JSON object.
    assert_eq!(h.put("/modules/A/config", "[1]").await.status, 400);
    assert_eq!(h.put("/modules/A/config", "{oops").await.status, 400);
    // Bad parameters.
    assert_eq!(h.put("/modules/A/config?version=x", new).await.status, 400);
    assert_eq!(h.put("/modules/A/config?version=-1", new).await.status, 400);
    assert_eq!(h.put("/modules/A/config?verison=2", new).await.status, 400);
    assert_eq!(
        h.put("/modules/A/config?unsafe=maybe", new).await.status,
        400
    );
    // Unknown module.
    assert_eq!(h.put("/modules/Nobody/config", new).await.status, 404);

    // The same config again changes nothing and sends nothing.
    let same = h
        .put("/modules/A/config?version=2", r#"{"name":"a||b","port":2}"#)
        .await;
    assert_eq!(
        same.json(),
        json!({"version": 2, "changed": false, "notified": 0})
    );

    // An unsafe update skips the schema; it is the next thing A receives (nothing was sent
    // for the refused updates).
    let forced = h
        .put(
            "/modules/A/config?version=2&unsafe=true",
            r#"{"port":"eighty"}"#,
        )
        .await;
    assert_eq!(forced.status, 200, "{}", forced.text());
    assert_eq!(forced.json()["version"], 3);
    assert_eq!(
        a.expect("CONFIG:SEND_CONFIG_CHANGED").await,
        r#"{"port":"eighty"}"#
    );
    assert_eq!(h.service.active_config("A").unwrap().version, 3);

    // Unsafe creates a module that never connected: its config is waiting for it.
    let preload = h.put("/modules/Later/config?unsafe", r#"{"port":7}"#).await;
    assert_eq!(preload.json()["version"], 1);
    let mut later = h.module("Later").await;
    assert_eq!(
        later
            .ack(
                "MODULE:SEND_CONFIG_SCHEMA",
                &schema_payload(r#"{"port":1}"#)
            )
            .await,
        "ok"
    );
    assert_eq!(
        later.expect("CONFIG:SEND_CONFIG_WHEN_CONNECTED").await,
        r#"{"port":7}"#
    );
    h.shutdown().await;
}

#[tokio::test]
async fn error_events_reach_every_connection_of_the_module() {
    let h = Harness::start().await;
    let mut a1 = h.ready_module("A", "10.0.0.1", &[], false).await;
    let mut a2 = h.ready_module("A", "10.0.0.2", &[], false).await;

    let response = h
        .post(
            "/modules/A/error?event=ERROR_CONFIG",
            "bad config || really",
        )
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json(), json!({"sent": 2}));
    assert_eq!(a1.expect("ERROR_CONFIG").await, "bad config || really");
    assert_eq!(a2.expect("ERROR_CONFIG").await, "bad config || really");

    let response = h
        .post("/modules/A/error?event=ERROR_CONNECTION", "go away")
        .await;
    assert_eq!(response.json(), json!({"sent": 2}));
    assert_eq!(a1.expect("ERROR_CONNECTION").await, "go away");

    for bad in [
        "/modules/A/error",
        "/modules/A/error?event=ERROR_OTHER",
        "/modules/A/error?event=ERROR_CONFIG&extra=1",
    ] {
        let response = h.post(bad, "x").await;
        assert_eq!(response.status, 400, "{bad}");
        assert!(response.json()["error"].is_string());
    }
    let not_utf8 = http(
        h.admin,
        "POST",
        "/modules/A/error?event=ERROR_CONFIG",
        b"\xff\xfe",
    )
    .await;
    assert_eq!(not_utf8.status, 400);
    assert_eq!(
        h.post("/modules/Nobody/error?event=ERROR_CONFIG", "x")
            .await
            .status,
        404
    );
    h.shutdown().await;
}

#[tokio::test]
async fn disconnect_closes_the_module_normally_and_tells_the_others() {
    let h = Harness::start().await;
    let a = h.ready_module("A", "10.0.0.1", &[], false).await;
    let mut b = h.ready_module("B", "10.0.0.9", &["A"], false).await;
    assert_eq!(
        b.expect("A_MODULE_CONNECTED").await,
        r#"[{"ip":"10.0.0.1","port":"9000"}]"#
    );

    let response = h.post("/modules/A/disconnect", "").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json(), json!({"closed": 1}));
    let gone = a.closed().await;
    assert!(gone.normal, "{gone}");
    assert_eq!(gone.close.as_ref().and_then(|c| c.code), Some(1000));
    assert_eq!(b.expect("A_MODULE_CONNECTED").await, "[]");
    assert_eq!(h.get("/modules").await.json()[0]["instances"], json!([]));

    // Known but without connections now; unknown.
    assert_eq!(
        h.post("/modules/A/disconnect", "").await.json(),
        json!({"closed": 0})
    );
    assert_eq!(h.post("/modules/Nobody/disconnect", "").await.status, 404);
    h.shutdown().await;
}

#[tokio::test]
async fn routes_are_the_routing_table_as_modules_get_it() {
    let h = Harness::start().await;
    assert_eq!(h.get("/routes").await.text(), "[]");
    let _a1 = h.ready_module("A", "10.0.0.1", &[], false).await;
    let mut watcher = h.module("W").await;
    assert_eq!(
        watcher
            .ack(
                "MODULE:SEND_REQUIREMENTS",
                r#"{"requiredModules":[],"requireRoutes":true}"#
            )
            .await,
        "ok"
    );
    watcher.expect("CONFIG:SEND_ROUTES_WHEN_CONNECTED").await;
    let mut a2 = h.module("A").await;
    a2.ack("MODULE:SEND_CONFIG_SCHEMA", &schema_payload("{}"))
        .await;
    a2.expect("CONFIG:SEND_CONFIG_WHEN_CONNECTED").await;
    let endpoints = r#"[{"path":"a/z","inner":true,"userAuthRequired":false,"extra":null},{"path":"a/b","inner":false,"userAuthRequired":false,"extra":null}]"#;
    assert_eq!(
        a2.ack("MODULE:READY", &ready_payload("A", "10.0.0.2", endpoints))
            .await,
        "ok"
    );
    let pushed = watcher.expect("CONFIG:SEND_ROUTES_CHANGED").await;

    let response = h.get("/routes").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.content_type.as_deref(), Some("application/json"));
    assert_eq!(response.text(), pushed, "byte for byte as on the wire");
    let table = response.json();
    assert_eq!(table[0]["address"]["ip"], "10.0.0.2", "newest first");
    assert_eq!(table[1]["address"]["ip"], "10.0.0.1");
    h.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let h = Harness::start().await;
    let missing = h.get("/nothing/here").await;
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].is_string());
    let wrong = h.post("/routes", "").await;
    assert_eq!(wrong.status, 405);
    assert!(wrong.json()["error"].is_string());
    assert_eq!(
        h.get("/config/config/get_active_config_by_module_name")
            .await
            .status,
        405
    );
    h.shutdown().await;
}

// ----- the isp-config-service paths -----

#[tokio::test]
async fn isp_get_active_config_by_module_name() {
    let h = Harness::start().await;
    let _a = h.ready_module("A", "10.0.0.1", &[], false).await;
    let path = "/config/config/get_active_config_by_module_name";
    let response = h.post(path, r#"{"moduleName":"A"}"#).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json(),
        json!({
            "id": "A", "name": "A", "moduleId": "A", "valid": true, "data": {"port": 1},
            "version": 1, "active": true,
            "createdAt": "0001-01-01T00:00:00Z", "updatedAt": "0001-01-01T00:00:00Z",
        })
    );
    // isp-kit decodes names case-insensitively.
    assert_eq!(h.post(path, r#"{"ModuleName":"A"}"#).await.status, 200);

    let unknown = h.post(path, r#"{"moduleName":"Nobody"}"#).await;
    assert_eq!(unknown.status, 400);
    assert_eq!(
        unknown.json(),
        json!({"errorCode": 2001, "errorMessage": "module not found"})
    );
    let _silent = h.module("Silent").await;
    h.service.wait_connections("Silent", 1, WAIT).await.unwrap();
    let no_config = h.post(path, r#"{"moduleName":"Silent"}"#).await;
    assert_eq!(no_config.json()["errorCode"], 2002);

    for bad in ["{}", r#"{"moduleName":""}"#, "not json", ""] {
        let response = h.post(path, bad).await;
        assert_eq!(response.status, 400, "{bad:?}");
        assert_eq!(response.json()["errorCode"], 400, "{bad:?}");
    }
    assert_eq!(
        h.post(path, "{}").await.json()["details"],
        json!({"moduleName": "required"})
    );
    h.shutdown().await;
}

#[tokio::test]
async fn isp_create_update_config() {
    let h = Harness::start().await;
    let mut a = h.ready_module("A", "10.0.0.1", &[], false).await;
    let path = "/config/config/create_update_config";

    let update = r#"{"id":"A","name":"A","moduleId":"A","version":1,"data":{"port":5}}"#;
    let response = h.post(path, update).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    assert_eq!(body["isChanged"], true);
    assert_eq!(body["version"], 2);
    assert_eq!(body["data"], json!({"port": 5}));
    assert_eq!(
        a.expect("CONFIG:SEND_CONFIG_CHANGED").await,
        r#"{"port":5}"#
    );

    // The same again: unchanged, with the active config.
    let again = r#"{"id":"A","name":"A","moduleId":"A","version":2,"data":{"port":5}}"#;
    let body = h.post(path, again).await.json();
    assert_eq!(
        (body["isChanged"].clone(), body["version"].clone()),
        (json!(false), json!(2))
    );

    let stale = r#"{"id":"A","name":"A","moduleId":"A","version":1,"data":{"port":6}}"#;
    let response = h.post(path, stale).await;
    assert_eq!(response.status, 400);
    assert_eq!(
        response.json(),
        json!({"errorCode": 2004, "errorMessage": "someone has updated the config"})
    );

    let invalid = r#"{"id":"A","name":"A","moduleId":"A","version":2,"data":{"port":"x"}}"#;
    let body = h.post(path, invalid).await.json();
    assert_eq!(body["errorCode"], 2003);
    assert_eq!(body["errorMessage"], "invalid config");
    assert!(
        body["details"]["/port"]
            .as_str()
            .unwrap()
            .contains("integer")
    );

    // Unsafe skips the schema; PascalCase names are accepted; no id: no version check.
    let forced = r#"{"Name":"A","ModuleId":"A","Data":{"port":"x"},"Unsafe":true}"#;
    let body = h.post(path, forced).await.json();
    assert_eq!(
        (body["isChanged"].clone(), body["version"].clone()),
        (json!(true), json!(3))
    );
    assert_eq!(
        a.expect("CONFIG:SEND_CONFIG_CHANGED").await,
        r#"{"port":"x"}"#
    );

    let wrong_id = r#"{"id":"other","name":"A","moduleId":"A","version":3,"data":{}}"#;
    assert_eq!(h.post(path, wrong_id).await.json()["errorCode"], 2002);
    let unknown = r#"{"name":"N","moduleId":"Nobody","data":{}}"#;
    assert_eq!(h.post(path, unknown).await.json()["errorCode"], 2005);
    let missing_name = r#"{"moduleId":"A","data":{}}"#;
    let body = h.post(path, missing_name).await.json();
    assert_eq!(
        (body["errorCode"].clone(), body["details"].clone()),
        (json!(400), json!({"name": "required"}))
    );
    assert_eq!(
        h.post(path, r#"{"name":"A","data":{}}"#).await.json()["details"],
        json!({"moduleId": "required"})
    );
    assert_eq!(
        h.post(path, r#"{"name":"A","moduleId":"A","version":"two"}"#)
            .await
            .status,
        400
    );
    h.shutdown().await;
}

#[tokio::test]
async fn isp_modules_info_and_routes() {
    let h = Harness::start().await;
    let _silent = h.module("Quiet").await;
    h.service.wait_connections("Quiet", 1, WAIT).await.unwrap();
    let a = h.module("A").await;
    a.ack("MODULE:SEND_CONFIG_SCHEMA", &schema_payload("{}"))
        .await;
    let endpoints = r#"[{"path":"a/z","inner":true,"userAuthRequired":false,"extra":null},{"path":"a/b","inner":false,"userAuthRequired":true,"extra":{"reqAdminPerm":"x"}}]"#;
    a.ack("MODULE:READY", &ready_payload("A", "10.0.0.1", endpoints))
        .await;
    let conn = h.service.connections("A")[0].id.0.to_string();

    let connection = json!({
        "id": conn, "moduleName": "A", "libVersion": "1.0.0", "version": "2.1.0",
        "address": {"ip": "10.0.0.1", "port": "9000"},
        "endpoints": [{"path": "a/b", "inner": false}, {"path": "a/z", "inner": true}],
        "establishedAt": "0001-01-01T00:00:00Z",
    });
    let info = h.post("/config/module/get_modules_info", "").await;
    assert_eq!(info.status, 200);
    assert_eq!(
        info.json(),
        json!([
            {
                "id": "A", "name": "A", "active": true, "lastConnectedAt": null,
                "lastDisconnectedAt": null, "configSchema": serde_json::from_str::<Value>(SCHEMA).unwrap(),
                "status": [connection.clone()], "createdAt": "0001-01-01T00:00:00Z",
            },
            {
                "id": "Quiet", "name": "Quiet", "active": false, "lastConnectedAt": null,
                "lastDisconnectedAt": null, "configSchema": null, "status": null,
                "createdAt": "0001-01-01T00:00:00Z",
            },
        ])
    );
    let routes = h.post("/config/routing/get_routes", "{}").await;
    assert_eq!(routes.status, 200);
    assert_eq!(routes.json(), json!([connection]));
    h.shutdown().await;
}

// ----- metrics autodiscovery -----

/// A declaration of `module` at `ip:9000`, with metrics autodiscovery at `ip:9091` when
/// `labels` is given.
fn metered(module: &str, ip: &str, labels: Option<&[(&str, &str)]>) -> BackendDeclaration {
    BackendDeclaration {
        metrics_autodiscovery: labels.map(|labels| MetricsAutodiscovery {
            address: format!("{ip}:9091"),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }),
        ..instance(module, ip, "9000", &[])
    }
}

#[tokio::test]
async fn metrics_autodiscovery_lists_the_instances_that_declared_it_until_they_leave() {
    let h = Harness::start().await;
    let path = "/internal/metrics/autodiscovery";
    assert_eq!(h.get(path).await.text(), "[]");
    let labels = [
        ("app", "metered"),
        ("__metrics_path__", "/internal/metrics"),
    ];
    let with = h
        .service
        .declare_instance(metered("metered", "10.0.0.1", Some(&labels)))
        .await
        .expect("declared");
    let _without = h
        .service
        .declare_instance(metered("plain", "10.0.0.2", None))
        .await
        .expect("declared");

    // Prometheus' HTTP service discovery, as isp-config-service encodes it; GET and POST.
    let expected = r#"[{"targets":["10.0.0.1:9091"],"labels":{"__metrics_path__":"/internal/metrics","app":"metered"}}]"#;
    for response in [h.get(path).await, h.post(path, "").await] {
        assert_eq!(response.status, 200);
        assert_eq!(response.content_type.as_deref(), Some("application/json"));
        assert_eq!(response.text(), expected);
    }
    assert_eq!(h.put(path, "").await.status, 405);

    // `GET /modules` shows the declaration of each instance, autodiscovery included.
    let modules = h.get("/modules").await.json();
    assert_eq!(modules[0]["name"], "metered");
    assert_eq!(
        modules[0]["instances"][0]["metricsAutodiscovery"],
        json!({
            "address": "10.0.0.1:9091",
            "labels": {"app": "metered", "__metrics_path__": "/internal/metrics"},
        })
    );
    assert_eq!(modules[1]["name"], "plain");
    assert!(
        modules[1]["instances"][0]
            .get("metricsAutodiscovery")
            .is_none()
    );

    with.remove().await;
    h.service
        .wait_ready_instances("metered", 0, WAIT)
        .await
        .expect("metered gone");
    assert_eq!(h.get(path).await.text(), "[]");
    h.shutdown().await;
}

#[tokio::test]
async fn metrics_autodiscovery_is_ordered_by_module_then_newest_first() {
    let h = Harness::start().await;
    let _zeta = h
        .service
        .declare_instance(metered("zeta", "10.0.0.9", Some(&[("z", "1")])))
        .await
        .expect("declared");
    let _alpha_old = h
        .service
        .declare_instance(metered("alpha", "10.0.0.1", Some(&[])))
        .await
        .expect("declared");
    // A module that sends its READY itself, over WebSocket; one that is not ready yet.
    let mid = h.module("mid").await;
    let ready = r#"{"moduleName":"mid","version":"1","libVersion":"1","endpoints":null,"requiredModules":[],"address":{"ip":"10.0.0.5","port":"9000"},"metricsAutodiscovery":{"address":"10.0.0.5:9091","labels":{"b":"2","a":"1"}}}"#;
    assert_eq!(mid.ack("MODULE:READY", ready).await, "ok");
    let _pending = h.module("beta").await;
    h.service.wait_connections("beta", 1, WAIT).await.unwrap();
    let _alpha_new = h
        .service
        .declare_instance(metered("alpha", "10.0.0.2", Some(&[("n", "2")])))
        .await
        .expect("declared");

    let targets = h.post("/internal/metrics/autodiscovery", "{}").await.json();
    assert_eq!(
        targets,
        json!([
            {"targets": ["10.0.0.2:9091"], "labels": {"n": "2"}},
            // No labels: `null`, as a Go module sends them and the real service answers.
            {"targets": ["10.0.0.1:9091"], "labels": null},
            {"targets": ["10.0.0.5:9091"], "labels": {"a": "1", "b": "2"}},
            {"targets": ["10.0.0.9:9091"], "labels": {"z": "1"}},
        ])
    );
    h.shutdown().await;
}

// ----- the binary -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_and_shuts_down_cleanly_on_sigterm() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let mut child = spawn_service_binary(Stdio::null());
    let stdout = child.stdout.take().expect("stdout");
    let pid = child.id();
    let mut guard = ChildGuard(Some(child));

    // Its first two lines: the bound addresses.
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || {
        let lines: Vec<String> = std::io::BufReader::new(stdout)
            .lines()
            .take(2)
            .map_while(Result::ok)
            .collect();
        let _ = tx.send(lines);
    });
    let lines = tokio::time::timeout(WAIT, rx)
        .await
        .expect("no addresses printed")
        .expect("stdout reader");
    let (ws, admin) = bound_addresses(&lines);

    let module = Client::connect(&common::ws_connector(), &ws.to_string(), "A").await;
    assert_eq!(
        module
            .ack(
                "MODULE:SEND_CONFIG_SCHEMA",
                &schema_payload(r#"{"port":1}"#)
            )
            .await,
        "ok"
    );
    let modules = http(admin, "GET", "/modules", b"").await;
    assert_eq!(modules.status, 200);
    assert_eq!(modules.json()[0]["name"], "A");
    assert_eq!(modules.json()[0]["config"], json!({"port": 1}));

    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let gone = module.closed().await;
    assert_eq!(
        gone.close.as_ref().and_then(|c| c.code),
        Some(1000),
        "{gone}"
    );
    let mut child = guard.0.take().expect("child");
    let status = tokio::time::timeout(WAIT, tokio::task::spawn_blocking(move || child.wait()))
        .await
        .expect("the process did not exit")
        .expect("wait task")
        .expect("wait");
    assert_eq!(status.code(), Some(0), "{status}");
    // Both listeners are gone with it.
    assert!(tokio::net::TcpStream::connect(admin).await.is_err());
    assert!(tokio::net::TcpStream::connect(ws).await.is_err());
}

#[test]
fn the_binary_refuses_bad_arguments_and_prints_help() {
    use std::process::Command;
    let exe = env!("CARGO_BIN_EXE_fake-config-service");
    let bad = Command::new(exe).arg("--bogus").output().expect("run");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unexpected argument '--bogus'"));
    let help = Command::new(exe).arg("--help").output().expect("run");
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("--listen <ADDR>") && text.contains("--admin <ADDR>"),
        "{text}"
    );
    // A port that is taken: exit 1 with a message.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").to_string();
    let busy = Command::new(exe)
        .args(["--listen", &port, "--admin", "127.0.0.1:0"])
        .env("RUST_LOG", "off")
        .output()
        .expect("run");
    assert_eq!(busy.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&busy.stderr).contains("cannot listen on"));
}
