#![no_main]
//! The OpenFlow stream decoder on arbitrary bytes: it never panics, a framer
//! fed in pieces sees what `decode_message` sees, and every message that
//! decodes re-encodes to bytes that decode to the same message.

use vipcast_openflow::{Framer, Message, decode_message};

fn reencodes(msg: &Message) {
    let bytes = msg.to_bytes().expect("a decoded message encodes");
    let again = Message::decode(&bytes).expect("a re-encoded message decodes");
    assert_eq!(&again, msg);
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);

    // Straight off the buffer, as a controller would after each read.
    let mut direct = Vec::new();
    let mut rest = data;
    while let Ok(Some((msg, used))) = decode_message(rest) {
        reencodes(&msg);
        direct.push(msg);
        rest = &rest[used..];
    }

    // Through the framer, fed in pieces; it stops at the first error, as a
    // controller would close the connection.
    let mut framer = Framer::new();
    let mut framed = Vec::new();
    'feed: for piece in data.chunks(chunk) {
        framer.push(piece);
        loop {
            match framer.next_message() {
                Ok(Some(msg)) => framed.push(msg),
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
    assert_eq!(framed, direct);
});
