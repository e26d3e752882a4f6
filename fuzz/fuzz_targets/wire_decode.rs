//! The stream's decoders, both encodings, both directions: any bytes give a frame or a decode error
//! with a code, never a panic; and a decoded frame encodes to something that decodes to it again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinchat_proto::codec::{self, Encoding};

fuzz_target!(|data: &[u8]| {
    for encoding in [Encoding::Binary, Encoding::Json] {
        match codec::decode_client(encoding, data) {
            Ok(frame) => {
                let again = codec::decode_client(encoding, &codec::encode(encoding, &frame))
                    .expect("a decoded client frame re-encodes to something decodable");
                assert_eq!(again, frame);
            }
            Err(e) => {
                let _ = e.code();
            }
        }
        match codec::decode_server(encoding, data) {
            Ok(frame) => {
                let again = codec::decode_server(encoding, &codec::encode(encoding, &frame))
                    .expect("a decoded server frame re-encodes to something decodable");
                assert_eq!(again, frame);
            }
            Err(e) => {
                let _ = e.code();
            }
        }
        let _ = codec::decode_snapshot(encoding, data);
    }
});
