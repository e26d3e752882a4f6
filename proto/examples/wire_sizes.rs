//! Prints example frames in both encodings with their sizes on the wire (WebSocket header included):
//! the figures quoted in `docs/protocol.md`. Run with `cargo run -p pinchat-proto --example wire_sizes`.

use pinchat_proto::stream::*;
use pinchat_proto::*;

fn ws_len(payload: usize) -> usize {
    payload
        + if payload < 126 {
            2
        } else if payload < 65536 {
            4
        } else {
            10
        }
}

fn show(title: &str, frame: &ServerFrame) {
    let bin = codec::encode(Encoding::Binary, frame);
    let json = codec::encode(Encoding::Json, frame);
    let hex: Vec<String> = bin.iter().map(|b| format!("{b:02x}")).collect();
    println!(
        "### {title}\nbinary: {} bytes on the wire\n  {}\njson:   {} bytes on the wire\n  {}\n",
        ws_len(bin.len()),
        hex.join(" "),
        ws_len(json.len()),
        String::from_utf8_lossy(&json)
    );
}

fn main() {
    let cursor = 1_234_567;
    let alice = AccountId(4_321);
    show(
        "presence change",
        &ServerFrame::Delta {
            sub: 0,
            cursor,
            contact: alice,
            fields: vec![Field::State(Presence::Busy)],
        },
    );
    show(
        "unread count",
        &ServerFrame::Delta {
            sub: 0,
            cursor,
            contact: alice,
            fields: vec![Field::Unread(3)],
        },
    );
    show(
        "signature change",
        &ServerFrame::Delta {
            sub: 0,
            cursor,
            contact: alice,
            fields: vec![Field::Signature("On holiday".into())],
        },
    );
    show(
        "message",
        &ServerFrame::Message {
            sub: 0,
            cursor,
            message: Message {
                id: MessageId(cursor),
                from: alice,
                ts: 1_795_000_000_000,
                text: "See you at 3?".into(),
            },
        },
    );
    show(
        "ack of a send",
        &ServerFrame::Ack {
            req: 7,
            result: Ack::Sent {
                id: MessageId(cursor),
                ts: 1_795_000_000_000,
                duplicate: false,
            },
        },
    );
    show(
        "error",
        &ServerFrame::Error {
            req: Some(7),
            error: ErrorBody::new(
                ErrorCode::MessageNotContact,
                "account 99 is not one of your contacts",
            ),
        },
    );
    let full = |id: u64, name: &str| ContactUpdate {
        id: AccountId(id),
        fields: vec![
            Field::Name(name.into()),
            Field::Avatar(Some("fGUrF6wE5glNtIwyRlEKZg".into())),
            Field::Signature("Coffee first, code second.".into()),
            Field::Description("Backend engineer in Shanghai.".into()),
            Field::State(Presence::Online),
            Field::Status(String::new()),
            Field::Unread(0),
            Field::PeerRead(MessageId(0)),
        ],
    };
    show(
        "full snapshot of 5 pins",
        &ServerFrame::Snapshot(Snapshot {
            sub: 0,
            cursor,
            full: true,
            contacts: (1..=5).map(|i| full(i, "Alice Chen")).collect(),
            messages: vec![],
        }),
    );
    let hello = codec::encode(
        Encoding::Binary,
        &ClientFrame::Hello {
            version: PROTOCOL_VERSION,
        },
    );
    println!(
        "### hello (client)\nbinary: {:02x?} ({} bytes + 6 bytes of masked header)",
        hello,
        hello.len()
    );
}
