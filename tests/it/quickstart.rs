//! The quickstart (exactly what `cargo run --example quickstart` runs) tells its story in
//! order and finishes well within its 10 s budget.

use std::time::{Duration, Instant};

/// Asserts that each fragment appears in `lines`, each on a later line than the one before.
fn assert_in_order(lines: &[&str], fragments: &[&str]) {
    let mut from = 0;
    for fragment in fragments {
        match lines[from..].iter().position(|l| l.contains(fragment)) {
            Some(i) => from += i + 1,
            None => panic!(
                "{fragment:?} not found after line {from}; the output was:\n{}",
                lines.join("\n")
            ),
        }
    }
}

#[tokio::test]
async fn quickstart_tells_the_story_in_order_and_quickly() {
    let started = Instant::now();
    let mut out = Vec::new();
    cluster_examples::quickstart(&mut out).await.unwrap();
    let elapsed = started.elapsed();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();

    assert!(
        lines[0].starts_with("1. A fake config service listens on ws://127.0.0.1:"),
        "{text}"
    );
    assert_in_order(
        &lines,
        &[
            "2. Module \"orders\" starts",
            r#"orders registered: it sent its config schema (derived from OrdersConfig) and its requirements {"requiredModules":["auth-service"],"requireRoutes":true}"#,
            r#"orders received its initial config: {"greeting":"hello","workers":2}"#,
            "orders received the addresses of auth-service: none yet.",
            "orders received the routing table: no module instance is ready yet.",
            "orders is ready: it declared itself at 127.0.0.1:9001 and its health check passes.",
            r#"3. An admin changes orders' config through the config service (version 2): {"greeting":"bonjour","workers":4}"#,
            r#"orders applied the new config: greeting "bonjour", 4 workers."#,
            r#"The config service refuses {"greeting":"hi","workers":"many"}"#,
            "4. Module \"auth-service\" comes up at 127.0.0.1:9101.",
            "auth-service is ready.",
            "orders received the addresses of auth-service: 127.0.0.1:9101; its balancer now picks 127.0.0.1:9101.",
            "orders' routing table now lists auth-service at 127.0.0.1:9101 (auth/api/login); orders at 127.0.0.1:9001 (orders/api/create).",
            "5. Both modules closed their sessions and the config service stopped",
        ],
    );
    assert!(
        text.contains("/workers"),
        "the refusal names the field: {text}"
    );
    assert_eq!(lines.len(), 15, "{text}");
    assert!(
        elapsed < Duration::from_secs(10),
        "the quickstart took {elapsed:?}"
    );
}

#[tokio::test]
async fn quickstart_reports_a_broken_output() {
    /// A writer that refuses everything, like a closed pipe.
    struct Closed;
    impl std::io::Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let err = cluster_examples::quickstart(Closed).await.unwrap_err();
    assert!(err.to_string().contains("pipe"), "{err}");
}
