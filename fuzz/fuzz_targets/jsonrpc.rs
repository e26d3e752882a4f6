//! The local API's input side: line framing (with a small limit so that over-long lines are exercised),
//! request parsing, and every method's parameters. Any bytes give calls or JSON-RPC errors, never a
//! panic, and an error always has a stable code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinchat_ipc::api::*;
use pinchat_ipc::jsonrpc::{Line, parse_call, read_line};
use serde_json::Value;

fn params<M: Method>(value: &Value) {
    let _ = serde_json::from_value::<M::Params>(value.clone());
}

thread_local! {
    // One runtime for every input: building one per input would be most of the work.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
}

fuzz_target!(|data: &[u8]| {
    RUNTIME.with(|runtime| {
        runtime.block_on(async {
            let mut reader = tokio::io::BufReader::with_capacity(7, data);
            let mut buf = Vec::new();
            loop {
                match read_line(&mut reader, &mut buf, 256).await {
                    Ok(Line::Eof) | Err(_) => break,
                    Ok(Line::TooLong) => continue,
                    Ok(Line::Line) => {}
                }
                assert!(buf.len() <= 256);
                match parse_call(&buf) {
                    Err(response) => {
                        let error = response.error.expect("a refusal carries an error");
                        assert!(!error.data.code.is_empty());
                    }
                    Ok(call) => {
                        let p = &call.params;
                        assert!(
                            p.is_object() || p.is_null(),
                            "positional params never get through"
                        );
                        params::<Status>(p);
                        params::<CreateWidget>(p);
                        params::<RebindWidget>(p);
                        params::<SetPins>(p);
                        params::<SetMode>(p);
                        params::<Unread>(p);
                        params::<History>(p);
                        params::<SendMessage>(p);
                        params::<MarkRead>(p);
                        params::<Reauth>(p);
                        params::<Avatar>(p);
                        params::<Subscribe>(p);
                    }
                }
            }
        })
    });
});
