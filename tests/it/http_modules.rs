//! The two-module HTTP story (exactly what `cargo run --example http_modules` runs): what
//! `inventory` declares, the caller's answers as isp-kit gives them, `inventory`'s business
//! error passed on by `orders`, and both servers stopping after their modules left.

use cluster_examples::http_modules::{OUT_OF_STOCK, UNKNOWN_SKU, http_modules};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_calls_inventory_through_the_cluster_and_answers_as_isp_kit() {
    let mut out = Vec::new();
    let report = http_modules(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();

    // Declared with their methods, as isp-config-service gets them.
    assert_eq!(
        report.declared,
        ["POST inventory/api/reserve", "GET inventory/api/stock"],
        "{text}"
    );

    // Two orders: the caller's request id reached inventory through orders; the second
    // order's keys were matched ignoring case, as Go's decoder does.
    assert_eq!(report.orders.len(), 2, "{text}");
    assert_eq!(report.orders[0].reservation.request_id, "order-1", "{text}");
    assert_eq!(report.orders[0].reservation.count, 2, "{text}");
    assert_eq!(report.orders[1].customer, "bob@example.com", "{text}");
    assert_eq!(report.orders[1].reservation.sku, "pear", "{text}");
    assert_eq!(
        report.orders[1].reservation.request_id.len(),
        32,
        "a new request id when the caller gives none: {text}"
    );

    // isp-kit's validation error: 400, errorCode 400, one detail per field.
    let invalid = report.invalid.unwrap();
    assert_eq!(invalid.status.as_u16(), 400);
    assert_eq!(invalid.error_code, 400);
    assert_eq!(invalid.error_message, "invalid request body");
    assert_eq!(
        serde_json::Value::Object(invalid.details),
        json!({
            "sku": "Sku must be at least 1 character in length",
            "count": "Count must be 1 or greater",
            "customer": "Customer must be a valid email address",
        })
    );

    // inventory's business error, as it came, through orders.
    let unknown = report.unknown.unwrap();
    assert_eq!(unknown.status.as_u16(), 400);
    assert_eq!(unknown.error_code, UNKNOWN_SKU);
    assert_ne!(unknown.error_code, OUT_OF_STOCK);
    assert_eq!(unknown.error_message, "unknown sku");
    assert_eq!(unknown.details["sku"], "plum");

    // The router's own answers, Go's.
    assert_eq!(report.wrong_method, Some((405, "OPTIONS, POST".to_owned())));
    assert_eq!(
        report.unknown_path,
        Some((404, "404 page not found\n".to_owned()))
    );

    // Only the two orders took stock.
    assert_eq!(report.stock["apple"], 8);
    assert_eq!(report.stock["pear"], 2);
    assert!(text.contains("6. Both modules leave"), "{text}");
}
