//! Arbitrary bytes into the frame decoder, whole and split at every chunk boundary the
//! input chooses: it must never panic, and every message it yields must re-encode to a
//! frame that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storesync_protocol::wire::{Decoded, FrameDecoder, decode_frame};

fuzz_target!(|data: &[u8]| {
    let Some((split, rest)) = data.split_first() else { return };
    let _ = decode_frame(rest, 1 << 20);
    let mut decoder = FrameDecoder::new(1 << 20);
    let chunk = usize::from(*split).max(1);
    for piece in rest.chunks(chunk) {
        decoder.push(piece);
        while let Ok(Some(decoded)) = decoder.next_frame() {
            if let Decoded::Message(message) = decoded {
                let frame = message.encode().expect("a decoded message encodes");
                let again = decode_frame(&frame, usize::MAX).expect("re-decodes").expect("complete");
                assert_eq!(again.0, Decoded::Message(message));
            }
        }
    }
});
