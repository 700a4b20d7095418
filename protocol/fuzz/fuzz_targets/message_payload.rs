//! Arbitrary payloads for every message kind, past the frame checksum that keeps random
//! bytes away from the payload decoders: decoding must never panic, and what decodes must
//! round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storesync_protocol::wire::{Decoded, Message};

fuzz_target!(|data: &[u8]| {
    let Some((kind, payload)) = data.split_first() else { return };
    if let Ok(Decoded::Message(message)) = Message::decode_payload(*kind, payload) {
        let frame = message.encode().expect("a decoded message encodes");
        let (again, _) = storesync_protocol::wire::decode_frame(&frame, usize::MAX)
            .expect("re-decodes")
            .expect("complete");
        assert_eq!(again, Decoded::Message(message));
    }
});
