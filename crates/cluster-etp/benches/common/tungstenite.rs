//! tokio-tungstenite over loopback TCP, set up as the transport had it (4 KiB read buffer,
//! 32 KiB write buffer): the reference library of `ws_libs` and of `etp`'s flood.

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
pub(crate) use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The URL the clients upgrade with.
pub(crate) const URL: &str = "ws://127.0.0.1/isp-etp/?module_name=bench";

pub(crate) type Ws = WebSocketStream<TcpStream>;

/// A connected TCP pair from `listener`, `TCP_NODELAY` on both ends.
pub(crate) async fn tcp_pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let addr = listener.local_addr().expect("addr");
    let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let client = client.expect("connect");
    let (server, _) = server.expect("accept");
    client.set_nodelay(true).expect("nodelay");
    server.set_nodelay(true).expect("nodelay");
    (client, server)
}

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 << 10)
        .write_buffer_size(32 << 10)
        .max_message_size(Some(4 << 20))
}

/// A connected (client, server) pair of tokio-tungstenite streams.
pub(crate) async fn pair(listener: &TcpListener) -> (Ws, Ws) {
    let (c, s) = tcp_pair(listener).await;
    let (client, server) = tokio::join!(
        tokio_tungstenite::client_async_with_config(URL, c, Some(config())),
        tokio_tungstenite::accept_async_with_config(s, Some(config()))
    );
    (client.expect("client").0, server.expect("server"))
}

/// A text message of `payload` (UTF-8).
pub(crate) fn text(payload: Bytes) -> Message {
    Message::Text(payload.try_into().expect("utf-8"))
}

pub(crate) fn is_text(m: &Message) -> bool {
    m.is_text()
}
