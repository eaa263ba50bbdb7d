//! The client over changing host lists: round-robin, connection reuse, no hosts, dead hosts,
//! and host lists that change while calls are running.

use cluster_client::HostsUpgrader;
use cluster_grpc::testing::{self, TestServer};
use cluster_grpc::tonic::{Code, Status};
use cluster_grpc::{ApiError, CallContext, CallError, GrpcClient, Invoke, Message, Router};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A server whose `who` answers its name and the caller's port.
async fn named(name: &'static str) -> TestServer {
    let router = Router::new()
        .handle_without_body("who", move |ctx: CallContext| async move {
            Ok::<_, ApiError>((name, ctx.remote_addr().map(|a| a.port())))
        })
        .unwrap();
    testing::serve(router).await
}

#[tokio::test]
async fn without_hosts_a_call_fails_at_once() {
    let client = GrpcClient::default();
    let err = client.invoke("who").raw().await.unwrap_err();
    assert!(matches!(err, CallError::NoHosts));
    assert!(err.to_string().contains("empty hosts array"), "{err}");
    client.upgrade(Vec::new());
    assert!(matches!(
        client.invoke("who").raw().await,
        Err(CallError::NoHosts)
    ));
}

#[tokio::test]
async fn calls_alternate_over_the_hosts_on_one_connection_each() {
    let (a, b) = (named("a").await, named("b").await);
    let client = GrpcClient::new([a.host(), b.host()]);
    let mut seen: Vec<(String, Option<u16>)> = Vec::new();
    for _ in 0..6 {
        seen.push(client.invoke("who").json().await.unwrap());
    }
    for pair in seen.windows(2) {
        assert_ne!(pair[0].0, pair[1].0, "round-robin: {seen:?}");
    }
    // Connection reuse: each server saw one client port.
    let mut ports: HashMap<String, Vec<Option<u16>>> = HashMap::new();
    for (name, port) in seen {
        ports.entry(name).or_default().push(port);
    }
    for (name, p) in ports {
        assert!(p.windows(2).all(|w| w[0] == w[1]), "{name}: {p:?}");
    }
    // Upgrading to the same hosts keeps the connections.
    let before: (String, Option<u16>) = client.invoke("who").json().await.unwrap();
    client.upgrade(vec![a.host(), b.host()]);
    let mut after = Vec::new();
    for _ in 0..2 {
        after.push(
            client
                .invoke("who")
                .json::<(String, Option<u16>)>()
                .await
                .unwrap(),
        );
    }
    assert!(after.contains(&before), "{before:?} {after:?}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_host_is_skipped() {
    let a = named("a").await;
    let dead = dead_host();
    let client = GrpcClient::new([dead.clone(), a.host()]);
    for _ in 0..4 {
        let (name, _): (String, Option<u16>) = client.invoke("who").json().await.unwrap();
        assert_eq!(name, "a");
    }
    // Alone, it is an error: Unavailable, as the transport says.
    client.upgrade(vec![dead]);
    let err = client.invoke("who").raw().await.unwrap_err();
    assert_eq!(err.grpc_code(), Some(Code::Unavailable), "{err:?}");
    a.shutdown().await;
}

#[tokio::test]
async fn a_host_that_fails_is_passed_over_for_a_while() {
    let a = named("a").await;
    let dead = dead_host();
    // The first call starts at the first host: the dead one fails, `a` answers.
    let client = GrpcClient::new([dead.clone(), a.host()]);
    assert!(client.paused_hosts().is_empty());
    let (name, _): (String, Option<u16>) = client.invoke("who").json().await.unwrap();
    assert_eq!(name, "a");
    assert_eq!(client.paused_hosts(), std::slice::from_ref(&dead));
    // While paused it is tried last, so every call goes straight to `a`.
    for _ in 0..10 {
        let (name, _): (String, Option<u16>) = client.invoke("who").json().await.unwrap();
        assert_eq!(name, "a");
    }
    // A host that answers is not paused; an upgrade keeps the pause of a host that stays.
    client.upgrade(vec![a.host(), dead.clone()]);
    assert_eq!(client.paused_hosts(), std::slice::from_ref(&dead));
    // Alone, a paused host is still tried.
    client.upgrade(vec![dead]);
    assert_eq!(
        client.invoke("who").raw().await.unwrap_err().grpc_code(),
        Some(Code::Unavailable)
    );
    a.shutdown().await;
}

/// A port that was free a moment ago: nothing listens there.
fn dead_host() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A call that moves on to the next host (the first cannot be connected to) carries its
/// request id there: the caller's as given (by `request_id` or in the metadata), or the one
/// made for the call.
#[tokio::test]
async fn a_call_that_moves_on_to_the_next_host_keeps_its_request_id() {
    let router = Router::new()
        .handle_without_body("id", |ctx: CallContext| async move {
            Ok::<_, ApiError>(ctx.request_id().map(str::to_owned))
        })
        .unwrap();
    let a = testing::serve(router).await;
    /// How the call gets its request id: the case's name, and what is done to the call.
    type Case = (&'static str, fn(Invoke) -> Invoke);
    let cases: [Case; 3] = [
        ("given", |call| call.request_id("the-callers-id")),
        ("in the metadata", |call| {
            call.metadata("x-request-id", "the-callers-id")
        }),
        ("made", |call| call),
    ];
    for (case, set) in cases {
        // A new client each time, so that the call starts at the dead host.
        let dead = dead_host();
        let client = GrpcClient::new([dead.clone(), a.host()]);
        let id: Option<String> = set(client.invoke("id")).json().await.unwrap();
        assert_eq!(
            client.paused_hosts(),
            std::slice::from_ref(&dead),
            "{case}: the call went to the dead host first"
        );
        let id = id.unwrap_or_else(|| panic!("{case}: no request id"));
        if case == "made" {
            assert_eq!(id.len(), 32, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{id}"
            );
        } else {
            assert_eq!(id, "the-callers-id", "{case}");
        }
    }
    a.shutdown().await;
}

#[tokio::test]
async fn an_unavailable_answer_from_a_server_is_not_retried() {
    let calls = Arc::new(AtomicUsize::new(0));
    let router = || {
        let calls = calls.clone();
        Router::new()
            .handle_raw("busy", move |_c: CallContext, _m: Message| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move { Err::<Message, _>(Status::unavailable("busy")) }
            })
            .unwrap()
    };
    let (a, b) = (
        testing::serve(router()).await,
        testing::serve(router()).await,
    );
    let client = GrpcClient::new([a.host(), b.host()]);
    let err = client.invoke("busy").raw().await.unwrap_err();
    assert_eq!(err.grpc_code(), Some(Code::Unavailable));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_lists_that_change_during_calls() {
    let (a, b) = (named("a").await, named("b").await);
    let client = GrpcClient::new([a.host()]);
    let stop = Arc::new(tokio::sync::Notify::new());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut callers = Vec::new();
    for _ in 0..16 {
        let client = client.clone();
        let done = done.clone();
        callers.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            while !done.load(Ordering::SeqCst) {
                let (name, _): (String, Option<u16>) = client.invoke("who").json().await.unwrap();
                answers.push(name);
            }
            answers
        }));
    }
    // Change the hosts under the running calls, each step after more calls went through.
    let steps = [
        vec![a.host(), b.host()],
        vec![b.host()],
        vec![a.host(), b.host()],
        vec![b.host()],
    ];
    for hosts in steps {
        client.upgrade(hosts);
        for _ in 0..20 {
            let _: (String, Option<u16>) = client.invoke("who").json().await.unwrap();
        }
    }
    // From here on only b is listed: every new call goes to b.
    for _ in 0..10 {
        let (name, _): (String, Option<u16>) = client.invoke("who").json().await.unwrap();
        assert_eq!(name, "b");
    }
    done.store(true, Ordering::SeqCst);
    stop.notify_waiters();
    let mut total = HashMap::<String, usize>::new();
    for c in callers {
        for name in c.await.unwrap() {
            *total.entry(name).or_default() += 1;
        }
    }
    assert!(
        total.get("a").copied().unwrap_or(0) > 0 && total.get("b").copied().unwrap_or(0) > 0,
        "{total:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_test_can_wait_for_the_hosts_the_cluster_delivers() {
    let client = GrpcClient::new(Vec::<String>::new());
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.wait_for(2).await }
    });
    client.upgrade(vec!["127.0.0.1:1".to_owned()]);
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "one host is not two");
    client.upgrade(vec!["127.0.0.1:1".to_owned(), "127.0.0.1:2".to_owned()]);
    let hosts = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
        .await
        .expect("woken by the second list")
        .unwrap();
    assert_eq!(&*hosts, ["127.0.0.1:1", "127.0.0.1:2"]);
    assert_eq!(
        &*client.watch().borrow().clone(),
        ["127.0.0.1:1", "127.0.0.1:2"]
    );
    assert_eq!(&*client.wait_for(0).await, ["127.0.0.1:1", "127.0.0.1:2"]);
}
