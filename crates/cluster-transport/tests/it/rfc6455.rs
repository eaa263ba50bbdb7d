//! RFC 6455 conformance of the WebSocket data path (after the opening handshake), on both
//! sides: our server (`WsAcceptor`) read by a raw client that writes crafted, masked frames,
//! and our client (`WsConnector`) read by a raw server that writes crafted, unmasked ones.
//!
//! Each case runs on both sides (`<case>::our_server`, `<case>::our_client`) unless it is
//! about one side's rule (masking, the server closing the socket first). The assertions are what the RFC mandates and the `ws` module
//! docs promise: the message delivered, the close code sent (on the wire, and as
//! [`TransportError::close_sent`]), the close reported; never a library's wording, so that
//! the suite holds whatever frame layer runs underneath.
//!
//! Every network await is bounded by `common::raw::PATIENCE` (5 s): a case that goes wrong
//! fails, it does not hang. No case sleeps.

use crate::common::raw::{
    ReadFrame, acceptor_with, assert_violation, frame, raw_client, raw_server_with, read_eof,
    read_frame, within,
};
use bytes::Bytes;
use cluster_transport::ws::{WsAcceptor, WsConfig, WsServerConfig};
use cluster_transport::{CloseInfo, Incoming, Transport, TransportError};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;
const RSV2: u8 = 0x20;
const RSV3: u8 = 0x10;
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xa;

/// Which of our sides a case reads with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Our server; the raw peer is a client (it masks).
    Server,
    /// Our client; the raw peer is a server (it does not mask).
    Client,
}

/// The raw peer of our side under test.
struct Peer {
    tcp: TcpStream,
    /// Whether the peer is a client: it masks what it sends, and what it reads is unmasked.
    client: bool,
    /// Our acceptor, kept for as long as the connection (server side).
    _acceptor: Option<WsAcceptor>,
}

impl Peer {
    /// A frame as this peer sends it (masked when it is a client).
    fn frame(&self, first: u8, payload: &[u8]) -> Vec<u8> {
        frame(first, payload, self.client)
    }

    /// A frame with the other side's masking: a violation of RFC 6455 §5.1 either way.
    fn wrongly_masked(&self, first: u8, payload: &[u8]) -> Vec<u8> {
        frame(first, payload, !self.client)
    }

    /// Writes `bytes` and flushes.
    async fn write(&mut self, bytes: &[u8]) {
        within("a raw write", async {
            self.tcp.write_all(bytes).await.unwrap();
            self.tcp.flush().await.unwrap();
        })
        .await;
    }

    /// Writes one frame of this peer's masking.
    async fn send(&mut self, first: u8, payload: &[u8]) {
        let frame = self.frame(first, payload);
        self.write(&frame).await;
    }

    /// Reads the next frame our side sent, checking its masking (§5.1: a client masks every
    /// frame, a server none).
    async fn read(&mut self) -> ReadFrame {
        let frame = within("a frame from our side", read_frame(&mut self.tcp)).await;
        assert_eq!(
            frame.masked,
            !self.client,
            "our {} sent a frame with the wrong masking: {frame:?}",
            if self.client { "server" } else { "client" }
        );
        assert_eq!(frame.first & 0x70, 0, "RSV bits set: {frame:?}");
        frame
    }

    /// Reads the next frame, which must be a close with `code`.
    async fn expect_close(&mut self, code: Option<u16>) -> ReadFrame {
        let frame = self.read().await;
        assert_eq!(frame.first, FIN | CLOSE, "not a close frame: {frame:?}");
        assert_eq!(frame.close_code(), code, "{frame:?}");
        frame
    }

    /// Expects the end of the socket (EOF or reset), nothing before it.
    async fn expect_eof(&mut self) {
        within("EOF on the raw socket", read_eof(&mut self.tcp)).await;
    }
}

/// Our side (with `limit` as its read limit, else the default) connected to a raw peer.
async fn open_with(side: Side, limit: Option<usize>) -> (Transport, Peer) {
    match side {
        Side::Server => {
            let mut config = WsServerConfig::default();
            if let Some(limit) = limit {
                config = config.with_max_message_size(limit);
            }
            let (mut acceptor, _) = acceptor_with(config).await;
            let (tcp, transport) = within("the upgrade", raw_client(&mut acceptor)).await;
            let peer = Peer {
                tcp,
                client: true,
                _acceptor: Some(acceptor),
            };
            (transport, peer)
        }
        Side::Client => {
            let mut config = WsConfig::default();
            if let Some(limit) = limit {
                config = config.with_max_message_size(limit);
            }
            let (transport, tcp) = within("the upgrade", raw_server_with(config)).await;
            let peer = Peer {
                tcp,
                client: false,
                _acceptor: None,
            };
            (transport, peer)
        }
    }
}

/// Our side with its default config connected to a raw peer.
async fn open(side: Side) -> (Transport, Peer) {
    open_with(side, None).await
}

/// The next message our side reads.
async fn recv(ours: &mut Transport) -> Result<Incoming, TransportError> {
    within("a message on our side", ours.stream.recv()).await
}

/// The next message our side reads, which must be a text message.
async fn expect_text(ours: &mut Transport) -> Bytes {
    match recv(ours).await {
        Ok(Incoming::Text(text)) => text,
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// The raw peer writes `bytes`; our side must fail the connection with `code`: its `recv`
/// returns the violation, the next `recv` an error at once, and the peer reads the close
/// frame with `code`, then (once our side dropped the transport) the end of the socket with
/// nothing in between.
async fn expect_fault(mut ours: Transport, mut peer: Peer, bytes: &[u8], code: u16) {
    peer.write(bytes).await;
    assert_violation(recv(&mut ours).await, code);
    let again = recv(&mut ours).await;
    assert!(again.is_err(), "a read after the fault gave {again:?}");
    peer.expect_close(Some(code)).await;
    drop(ours);
    peer.expect_eof().await;
}

/// [`expect_fault`] on a fresh connection of `side`, with the bytes `bytes` builds.
async fn fault(side: Side, code: u16, bytes: impl FnOnce(&Peer) -> Vec<u8>) {
    let (ours, peer) = open(side).await;
    let bytes = bytes(&peer);
    expect_fault(ours, peer, &bytes, code).await;
}

/// Frames of the peer's masking, concatenated.
fn frames(peer: &Peer, frames: &[(u8, &[u8])]) -> Vec<u8> {
    frames
        .iter()
        .flat_map(|(first, payload)| peer.frame(*first, payload))
        .collect()
}

/// A close payload: `code` then `reason`.
fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    payload
}

/// Defines `mod $case { our_server, our_client }`, each running `$case(Side::..)`.
macro_rules! both_sides {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test]
            async fn our_server() {
                super::$case(super::Side::Server).await;
            }

            #[tokio::test]
            async fn our_client() {
                super::$case(super::Side::Client).await;
            }
        }
    )*};
}

// ---------------------------------------------------------------------------------------
// Delivery
// ---------------------------------------------------------------------------------------

both_sides!(
    fragments_are_delivered_whole,
    a_character_split_across_fragments_is_delivered_whole,
    pings_between_fragments_are_answered_and_the_message_delivered,
    a_16_bit_length_is_read,
    a_64_bit_length_is_read,
    a_frame_written_one_byte_at_a_time_is_delivered,
    many_frames_in_one_write_are_delivered_in_order,
    an_empty_text_message_is_delivered,
    an_empty_message_in_fragments_is_delivered,
);

async fn fragments_are_delivered_whole(side: Side) {
    let (mut ours, mut peer) = open(side).await;
    let bytes = frames(
        &peer,
        &[
            (TEXT, b"one "),
            (CONTINUATION, b"two "),
            (CONTINUATION, b""),
            (FIN | CONTINUATION, b"three"),
        ],
    );
    peer.write(&bytes).await;
    assert_eq!(expect_text(&mut ours).await, "one two three");
}

async fn a_character_split_across_fragments_is_delivered_whole(side: Side) {
    let (mut ours, mut peer) = open(side).await;
    // "€" is e2 82 ac; "𝄞" is f0 9d 84 9e: each split between two frames.
    let bytes = frames(
        &peer,
        &[
            (TEXT, b"price \xe2"),
            (CONTINUATION, b"\x82\xac clef \xf0\x9d"),
            (FIN | CONTINUATION, b"\x84\x9e"),
        ],
    );
    peer.write(&bytes).await;
    assert_eq!(expect_text(&mut ours).await, "price € clef 𝄞");
}

async fn pings_between_fragments_are_answered_and_the_message_delivered(side: Side) {
    let (mut ours, mut peer) = open(side).await;
    let reading = async {
        let text = expect_text(&mut ours).await;
        (text, ours)
    };
    let peer_side = async {
        // The pong of each ping comes while the message is still open.
        peer.send(TEXT, b"first ").await;
        peer.send(FIN | PING, b"ping one").await;
        let pong = peer.read().await;
        assert_eq!(
            (pong.first, pong.payload.as_slice()),
            (FIN | PONG, &b"ping one"[..])
        );
        peer.send(CONTINUATION, b"second ").await;
        peer.send(FIN | PING, b"").await;
        let pong = peer.read().await;
        assert_eq!(
            (pong.first, pong.payload.as_slice()),
            (FIN | PONG, &b""[..])
        );
        let ping = [0xa5; 125];
        peer.send(FIN | PING, &ping).await;
        let pong = peer.read().await;
        assert_eq!(
            (pong.first, pong.payload.as_slice()),
            (FIN | PONG, &ping[..])
        );
        peer.send(FIN | CONTINUATION, b"third").await;
    };
    let ((text, mut ours), ()) = tokio::join!(reading, peer_side);
    assert_eq!(text, "first second third");

    // The connection goes on.
    peer.send(FIN | TEXT, b"after").await;
    assert_eq!(expect_text(&mut ours).await, "after");
}

async fn a_16_bit_length_is_read(side: Side) {
    let (mut ours, mut peer) = open(side).await;
    for len in [126, 200, 65_535] {
        let text = "x".repeat(len);
        let frame = peer.frame(FIN | TEXT, text.as_bytes());
        assert_eq!(frame[1] & 0x7f, 126);
        peer.write(&frame).await;
        assert_eq!(expect_text(&mut ours).await, text);
    }
}

async fn a_64_bit_length_is_read(side: Side) {
    let (mut ours, mut peer) = open(side).await;
    let text = "y".repeat(70_000);
    let frame = peer.frame(FIN | TEXT, text.as_bytes());
    assert_eq!(frame[1] & 0x7f, 127);
    peer.write(&frame).await;
    assert_eq!(expect_text(&mut ours).await, text);
}

async fn a_frame_written_one_byte_at_a_time_is_delivered(side: Side) {
    let (mut ours, mut peer) = open(side).await;
    peer.tcp.set_nodelay(true).unwrap();
    let text = "slow ".repeat(40); // 200 bytes: a 16-bit length
    let mut bytes = peer.frame(TEXT, &text.as_bytes()[..100]);
    bytes.extend(peer.frame(FIN | PING, b"p"));
    bytes.extend(peer.frame(FIN | CONTINUATION, &text.as_bytes()[100..]));
    let reading = async {
        let text = expect_text(&mut ours).await;
        (text, ours)
    };
    let writing = async {
        for byte in &bytes {
            peer.write(std::slice::from_ref(byte)).await;
            // Let our side read what came so far.
            tokio::task::yield_now().await;
        }
        let pong = peer.read().await;
        assert_eq!(
            (pong.first, pong.payload.as_slice()),
            (FIN | PONG, &b"p"[..])
        );
    };
    let ((got, _ours), ()) = tokio::join!(reading, writing);
    assert_eq!(got, text);
}

async fn many_frames_in_one_write_are_delivered_in_order(side: Side) {
    let (mut ours, mut peer) = open(side).await;
    let texts: Vec<String> = (0..200).map(|i| format!("message {i}")).collect();
    let bytes: Vec<u8> = texts
        .iter()
        .flat_map(|t| peer.frame(FIN | TEXT, t.as_bytes()))
        .collect();
    peer.write(&bytes).await;
    for text in &texts {
        assert_eq!(expect_text(&mut ours).await, text.as_str());
    }
}

async fn an_empty_text_message_is_delivered(side: Side) {
    let (mut ours, mut peer) = open(side).await;
    let bytes = frames(&peer, &[(FIN | TEXT, b""), (FIN | TEXT, b"next")]);
    peer.write(&bytes).await;
    assert_eq!(expect_text(&mut ours).await, "");
    assert_eq!(expect_text(&mut ours).await, "next");
}

async fn an_empty_message_in_fragments_is_delivered(side: Side) {
    let (mut ours, mut peer) = open(side).await;
    let bytes = frames(&peer, &[(TEXT, b""), (FIN | CONTINUATION, b"")]);
    peer.write(&bytes).await;
    assert_eq!(expect_text(&mut ours).await, "");
}

// ---------------------------------------------------------------------------------------
// Framing violations: 1002
// ---------------------------------------------------------------------------------------

both_sides!(
    rsv1_is_a_protocol_error,
    rsv2_is_a_protocol_error,
    rsv3_is_a_protocol_error,
    rsv_on_a_control_frame_is_a_protocol_error,
    reserved_opcodes_are_protocol_errors,
    a_continuation_with_nothing_started_is_a_protocol_error,
    a_continuation_after_a_whole_message_is_a_protocol_error,
    a_new_message_while_one_is_fragmented_is_a_protocol_error,
    a_fragmented_control_frame_is_a_protocol_error,
    a_ping_over_125_bytes_is_a_protocol_error,
    a_pong_over_125_bytes_is_a_protocol_error,
    a_close_over_125_bytes_is_a_protocol_error,
    a_close_with_a_one_byte_payload_is_a_protocol_error,
    close_codes_invalid_on_the_wire_are_protocol_errors,
);

async fn rsv1_is_a_protocol_error(side: Side) {
    fault(side, 1002, |p| p.frame(FIN | RSV1 | TEXT, b"rsv1")).await;
}

async fn rsv2_is_a_protocol_error(side: Side) {
    fault(side, 1002, |p| p.frame(FIN | RSV2 | TEXT, b"rsv2")).await;
}

async fn rsv3_is_a_protocol_error(side: Side) {
    fault(side, 1002, |p| p.frame(FIN | RSV3 | TEXT, b"rsv3")).await;
}

async fn rsv_on_a_control_frame_is_a_protocol_error(side: Side) {
    fault(side, 1002, |p| p.frame(FIN | RSV1 | PING, b"rsv")).await;
}

async fn reserved_opcodes_are_protocol_errors(side: Side) {
    for opcode in [0x3, 0x4, 0x5, 0x6, 0x7, 0xb, 0xc, 0xd, 0xe, 0xf] {
        let (ours, peer) = open(side).await;
        let bytes = peer.frame(FIN | opcode, b"reserved");
        expect_fault(ours, peer, &bytes, 1002).await;
    }
}

async fn a_continuation_with_nothing_started_is_a_protocol_error(side: Side) {
    fault(side, 1002, |p| p.frame(FIN | CONTINUATION, b"orphan")).await;
}

async fn a_continuation_after_a_whole_message_is_a_protocol_error(side: Side) {
    let (mut ours, mut peer) = open(side).await;
    peer.send(FIN | TEXT, b"whole").await;
    assert_eq!(expect_text(&mut ours).await, "whole");
    let bytes = peer.frame(CONTINUATION, b"orphan");
    expect_fault(ours, peer, &bytes, 1002).await;
}

async fn a_new_message_while_one_is_fragmented_is_a_protocol_error(side: Side) {
    fault(side, 1002, |p| {
        frames(p, &[(TEXT, b"open"), (FIN | TEXT, b"new")])
    })
    .await;
    // Also a non-final one.
    fault(side, 1002, |p| {
        frames(p, &[(TEXT, b"open"), (TEXT, b"new")])
    })
    .await;
}

async fn a_fragmented_control_frame_is_a_protocol_error(side: Side) {
    fault(side, 1002, |p| p.frame(PING, b"not final")).await;
    fault(side, 1002, |p| p.frame(PONG, b"not final")).await;
    fault(side, 1002, |p| p.frame(CLOSE, &close_payload(1000, b""))).await;
}

async fn a_ping_over_125_bytes_is_a_protocol_error(side: Side) {
    fault(side, 1002, |p| p.frame(FIN | PING, &[b'p'; 126])).await;
}

async fn a_pong_over_125_bytes_is_a_protocol_error(side: Side) {
    fault(side, 1002, |p| p.frame(FIN | PONG, &[b'p'; 126])).await;
}

async fn a_close_over_125_bytes_is_a_protocol_error(side: Side) {
    fault(side, 1002, |p| {
        p.frame(FIN | CLOSE, &close_payload(1000, &[b'r'; 124]))
    })
    .await;
}

async fn a_close_with_a_one_byte_payload_is_a_protocol_error(side: Side) {
    fault(side, 1002, |p| p.frame(FIN | CLOSE, &[0x03])).await;
}

async fn close_codes_invalid_on_the_wire_are_protocol_errors(side: Side) {
    // §7.4.1/§7.4.2: 1004–1006 and 1015 are reserved (never on the wire); below 1000, between
    // 1016 and 2999 (unassigned) and from 5000 up are not valid codes.
    for code in [
        0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65_535,
    ] {
        let (ours, peer) = open(side).await;
        let bytes = peer.frame(FIN | CLOSE, &close_payload(code, b"bad code"));
        expect_fault(ours, peer, &bytes, 1002).await;
    }
}

#[tokio::test]
async fn our_server_fails_an_unmasked_frame_with_1002() {
    fault(Side::Server, 1002, |p| p.wrongly_masked(FIN | TEXT, b"hi")).await;
    fault(Side::Server, 1002, |p| p.wrongly_masked(FIN | PING, b"hi")).await;
}

#[tokio::test]
async fn our_client_fails_a_masked_frame_with_1002() {
    fault(Side::Client, 1002, |p| p.wrongly_masked(FIN | TEXT, b"hi")).await;
    fault(Side::Client, 1002, |p| p.wrongly_masked(FIN | PING, b"hi")).await;
}

// ---------------------------------------------------------------------------------------
// Not UTF-8: 1007
// ---------------------------------------------------------------------------------------

both_sides!(
    text_that_is_not_utf8_is_invalid_payload,
    text_invalid_only_as_a_whole_is_invalid_payload,
    a_close_reason_that_is_not_utf8_is_invalid_payload,
);

async fn text_that_is_not_utf8_is_invalid_payload(side: Side) {
    for text in [
        &b"\xff"[..],
        b"ok \xc3\x28",      // a continuation byte missing
        b"\xed\xa0\x80",     // a UTF-16 surrogate
        b"\xc0\xaf",         // an overlong encoding
        b"\xf4\x90\x80\x80", // over U+10FFFF
        b"truncated at end \xe2\x82",
    ] {
        let (ours, peer) = open(side).await;
        let bytes = peer.frame(FIN | TEXT, text);
        expect_fault(ours, peer, &bytes, 1007).await;
    }
}

async fn text_invalid_only_as_a_whole_is_invalid_payload(side: Side) {
    // Each fragment is valid or a valid prefix; the whole is not.
    let cases: [&[(u8, &[u8])]; 3] = [
        // A sequence left truncated by the last fragment.
        &[(TEXT, b"fine "), (FIN | CONTINUATION, b"then cut \xe2\x82")],
        // A sequence started in one fragment and broken in the next.
        &[(TEXT, b"start \xe2\x82"), (FIN | CONTINUATION, b"(")],
        // A sequence left truncated across three fragments.
        &[
            (TEXT, b"\xf0"),
            (CONTINUATION, b"\x9d"),
            (FIN | CONTINUATION, b"\x84"),
        ],
    ];
    for case in cases {
        let (ours, peer) = open(side).await;
        let bytes = frames(&peer, case);
        expect_fault(ours, peer, &bytes, 1007).await;
    }
}

async fn a_close_reason_that_is_not_utf8_is_invalid_payload(side: Side) {
    fault(side, 1007, |p| {
        p.frame(FIN | CLOSE, &close_payload(1000, b"bye \xff"))
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Binary: 1003
// ---------------------------------------------------------------------------------------

both_sides!(
    a_binary_message_is_unsupported_data,
    a_fragmented_binary_message_is_unsupported_data,
);

async fn a_binary_message_is_unsupported_data(side: Side) {
    fault(side, 1003, |p| p.frame(FIN | BINARY, b"\x00\x01\x02")).await;
}

async fn a_fragmented_binary_message_is_unsupported_data(side: Side) {
    fault(side, 1003, |p| {
        frames(p, &[(BINARY, b"\x00\x01"), (FIN | CONTINUATION, b"\x02")])
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Over the limit: 1009
// ---------------------------------------------------------------------------------------

const LIMIT: usize = 1000;

both_sides!(
    a_frame_over_the_limit_is_too_big,
    fragments_over_the_limit_together_are_too_big,
    a_message_at_the_limit_passes,
);

async fn a_frame_over_the_limit_is_too_big(side: Side) {
    let (ours, peer) = open_with(side, Some(LIMIT)).await;
    let bytes = peer.frame(FIN | TEXT, &[b'x'; LIMIT + 1]);
    expect_fault(ours, peer, &bytes, 1009).await;
}

async fn fragments_over_the_limit_together_are_too_big(side: Side) {
    let (ours, peer) = open_with(side, Some(LIMIT)).await;
    let part = [b'x'; LIMIT / 3 + 1];
    let bytes = frames(
        &peer,
        &[
            (TEXT, &part),
            (CONTINUATION, &part),
            (FIN | CONTINUATION, &part),
        ],
    );
    expect_fault(ours, peer, &bytes, 1009).await;
}

async fn a_message_at_the_limit_passes(side: Side) {
    let (mut ours, mut peer) = open_with(side, Some(LIMIT)).await;
    let part = [b'x'; LIMIT / 2];
    peer.send(FIN | TEXT, &[b'x'; LIMIT]).await;
    assert_eq!(expect_text(&mut ours).await.len(), LIMIT);
    let bytes = frames(&peer, &[(TEXT, &part), (FIN | CONTINUATION, &part)]);
    peer.write(&bytes).await;
    assert_eq!(expect_text(&mut ours).await.len(), LIMIT);
}

// ---------------------------------------------------------------------------------------
// The peer's close
// ---------------------------------------------------------------------------------------

both_sides!(
    the_peers_close_is_reported_and_echoed,
    a_close_without_payload_is_reported_without_code,
    a_close_with_a_valid_code_is_reported,
    a_close_after_a_ping_and_text_comes_after_them,
);

async fn the_peers_close_is_reported_and_echoed(side: Side) {
    let (mut ours, mut peer) = open(side).await;
    peer.send(
        FIN | CLOSE,
        &close_payload(1000, "done, merci ✓".as_bytes()),
    )
    .await;
    assert_eq!(
        recv(&mut ours).await.unwrap(),
        Incoming::Closed(CloseInfo::normal("done, merci ✓"))
    );
    peer.expect_close(Some(1000)).await;
    // The stream is done: reads say closed, with the same close.
    match recv(&mut ours).await {
        Err(TransportError::Closed(info)) => assert_eq!(info, CloseInfo::normal("done, merci ✓")),
        other => panic!("expected Closed after the close, got {other:?}"),
    }
    drop(ours);
    peer.expect_eof().await;
}

async fn a_close_without_payload_is_reported_without_code(side: Side) {
    let (mut ours, mut peer) = open(side).await;
    peer.send(FIN | CLOSE, b"").await;
    match recv(&mut ours).await.unwrap() {
        Incoming::Closed(info) => assert_eq!(info.code, None, "{info:?}"),
        other => panic!("expected Closed, got {other:?}"),
    }
    // §5.5.1: the reply is a close; with no code to echo it carries none (1005 may not be
    // sent) or 1000.
    let reply = peer.read().await;
    assert_eq!(reply.opcode(), CLOSE, "{reply:?}");
    assert!(matches!(reply.close_code(), None | Some(1000)), "{reply:?}");
}

async fn a_close_with_a_valid_code_is_reported(side: Side) {
    // Codes that may be sent: the defined ones (§7.4.1 and IANA's registry) and 3000–4999.
    for code in [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999,
    ] {
        let (mut ours, mut peer) = open(side).await;
        peer.send(FIN | CLOSE, &close_payload(code, b"r")).await;
        assert_eq!(
            recv(&mut ours).await.unwrap(),
            Incoming::Closed(CloseInfo {
                code: Some(code),
                reason: "r".to_owned(),
            }),
            "code {code}"
        );
        peer.expect_close(Some(code)).await;
    }
}

async fn a_close_after_a_ping_and_text_comes_after_them(side: Side) {
    let (mut ours, mut peer) = open(side).await;
    let bytes = frames(
        &peer,
        &[
            (FIN | TEXT, b"last words"),
            (FIN | PING, b"are you there"),
            (FIN | CLOSE, &close_payload(1001, b"going away")),
        ],
    );
    peer.write(&bytes).await;
    assert_eq!(expect_text(&mut ours).await, "last words");
    assert_eq!(
        recv(&mut ours).await.unwrap(),
        Incoming::Closed(CloseInfo {
            code: Some(1001),
            reason: "going away".to_owned(),
        })
    );
    let pong = peer.read().await;
    assert_eq!(
        (pong.first, pong.payload.as_slice()),
        (FIN | PONG, &b"are you there"[..])
    );
    peer.expect_close(Some(1001)).await;
}

// ---------------------------------------------------------------------------------------
// The end of a failed connection
// ---------------------------------------------------------------------------------------

// The transport closes the socket itself: a failed connection while the application still
// holds the transport (§7.1.7 says MUST), and our server's end of a finished close handshake
// (§7.1.1 says the server SHOULD close first).

#[tokio::test]
async fn a_failed_connection_is_closed_while_the_transport_is_held_by_our_server() {
    a_failed_connection_is_closed_while_the_transport_is_held(Side::Server).await;
}

#[tokio::test]
async fn a_failed_connection_is_closed_while_the_transport_is_held_by_our_client() {
    a_failed_connection_is_closed_while_the_transport_is_held(Side::Client).await;
}

/// §7.1.7: to fail the connection an endpoint sends the close and then closes the TCP
/// connection, without waiting for the application to drop the transport.
async fn a_failed_connection_is_closed_while_the_transport_is_held(side: Side) {
    let (mut ours, mut peer) = open(side).await;
    peer.send(FIN | RSV1 | TEXT, b"x").await;
    assert_violation(recv(&mut ours).await, 1002);
    assert!(recv(&mut ours).await.is_err());
    peer.expect_close(Some(1002)).await;
    peer.expect_eof().await;
    drop(ours);
}

/// §7.1.1: once the close handshake is done, the server closes the TCP connection first (the
/// client waits for it).
#[tokio::test]
async fn our_server_closes_the_socket_after_the_close_handshake() {
    let (mut ours, mut peer) = open(Side::Server).await;
    peer.send(FIN | CLOSE, &close_payload(1000, b"bye")).await;
    assert_eq!(
        recv(&mut ours).await.unwrap(),
        Incoming::Closed(CloseInfo::normal("bye"))
    );
    peer.expect_close(Some(1000)).await;
    peer.expect_eof().await;
    drop(ours);
}
