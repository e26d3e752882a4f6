//! The view without a display: when there is no graphical session (a server, an SSH login, CI), the
//! app says so and prints each widget — identity, pinned contacts with state, signature and unread
//! count — and the newest message, whenever something changes, until interrupted. On a terminal the
//! view is redrawn in place; into a pipe or a file each version is appended.

use crate::backend::{Backend, ToUi};
use crate::i18n::Lang;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::mpsc::Receiver;

/// Prints the widgets as they change, until the daemon goes away.
pub fn run(backend: Backend, events: Receiver<ToUi>, lang: Lang) -> std::process::ExitCode {
    let words = lang.words();
    println!("{}", words.no_display);
    let mut order: Vec<String> = vec![];
    let mut views: BTreeMap<String, Value> = BTreeMap::new();
    // Printed again only when it changed: most notifications change nothing a line shows.
    let mut last = String::new();
    // The newest message that arrived while this view runs: (sender, text).
    let mut newest: Option<(String, String)> = None;
    let in_place = std::io::stdout().is_terminal();
    let draw = |text: String, last: &mut String| {
        if text != *last {
            if in_place {
                // Home, then clear the screen: the view replaces the previous one.
                print!("\x1b[H\x1b[2J{}\n{text}", words.no_display);
            } else {
                print!("{text}");
            }
            use std::io::Write;
            let _ = std::io::stdout().flush();
            *last = text;
        }
    };
    let ask = |order: &[String]| {
        for (i, w) in order.iter().enumerate() {
            let _ = backend.request(
                i as u64,
                "widget.snapshot".into(),
                serde_json::json!({ "widget": w }),
            );
        }
    };
    while let Ok(event) = events.recv() {
        match event {
            ToUi::Widgets(list) => {
                order = list.into_iter().map(|(w, _)| w.id).collect();
                views.retain(|k, _| order.contains(k));
                if order.is_empty() {
                    println!("{}", words.terminal_no_accounts);
                }
                ask(&order);
            }
            ToUi::Notification(_) => ask(&order),
            ToUi::Reply {
                id, result: Ok(view), ..
            } => {
                if let Some(w) = order.get(id as usize) {
                    views.insert(w.clone(), view);
                    draw(render(&order, &views, newest.as_ref(), lang), &mut last);
                }
            }
            ToUi::Reply { result: Err(e), .. } => eprintln!("pinchat: {e}"),
            ToUi::Incoming { name, text, .. } => {
                newest = Some((name, text));
                draw(render(&order, &views, newest.as_ref(), lang), &mut last);
            }
            // Calls need a panel: without a display, one rings out for the caller.
            // Calls need the desktop app; here it is said who calls.
            ToUi::Ringing { name, ring, .. } => {
                let kind = if ring.video {
                    words.video_call
                } else {
                    words.voice_call
                };
                println!("📞 {name} {} ({kind})", words.is_calling);
            }
            ToUi::Show | ToUi::AvatarStored(_) | ToUi::RingOver { .. } => {}
            ToUi::Stop => {
                backend.stop();
                return std::process::ExitCode::SUCCESS;
            }
            ToUi::Lost(why) => {
                eprintln!("pinchat: lost the connection to the daemon ({why})");
                backend.stop();
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    backend.stop();
    std::process::ExitCode::SUCCESS
}

/// The text of every widget, in order, and the newest message (sender, text) if any.
pub fn render(
    order: &[String],
    views: &BTreeMap<String, Value>,
    newest: Option<&(String, String)>,
    lang: Lang,
) -> String {
    let words = lang.words();
    let mut out = String::from("\n");
    for w in order {
        let Some(v) = views.get(w) else { continue };
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let account = v.get("account").cloned().unwrap_or_default();
        let pins = v
            .get("pins")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let unread: u64 = pins.iter().filter_map(|p| p.get("unread")?.as_u64()).sum();
        out += &format!(
            "{} ({}) · {} · {unread} {}\n",
            s(&account, "name"),
            s(&account, "login"),
            s(v, "connection"),
            words.unread
        );
        for p in &pins {
            let state = s(p, "state");
            let dot = match state.as_str() {
                "online" => "●",
                "offline" => "○",
                _ => "◐",
            };
            let n = p.get("unread").and_then(Value::as_u64).unwrap_or(0);
            let badge = if n > 0 { format!("  [{n}]") } else { String::new() };
            out += &format!(
                "  {dot} {} {} {}{badge}\n",
                pad(&s(p, "name"), 16),
                pad(words.state(&state), 14),
                s(p, "signature")
            );
        }
    }
    if let Some((from, text)) = newest {
        // One line: the text's first line, shortened.
        let line: String = text.lines().next().unwrap_or("").chars().take(60).collect();
        out += &format!("\n{} {from}: {line}\n", words.new_message_from);
    }
    out
}

/// `s` padded with spaces to `width` columns, counting East Asian wide characters as two.
fn pad(s: &str, width: usize) -> String {
    let wide = |c: char| matches!(c as u32, 0x1100..=0x115F | 0x2E80..=0xA4CF | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF | 0xFE30..=0xFE4F | 0xFF00..=0xFF60 | 0xFFE0..=0xFFE6 | 0x1F300..=0x1FAFF);
    let cols: usize = s.chars().map(|c| if wide(c) { 2 } else { 1 }).sum();
    format!("{s}{}", " ".repeat(width.saturating_sub(cols)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_widget_renders_its_pins_and_counts() {
        let view = serde_json::json!({
            "connection": "online",
            "account": {"name": "Demo", "login": "demo"},
            "pins": [
                {"name": "Alice", "state": "online", "signature": "hi", "unread": 2},
                {"name": "Bob", "state": "offline", "signature": "", "unread": 0}
            ]
        });
        let order = vec!["w1".to_owned()];
        let views = BTreeMap::from([("w1".to_owned(), view)]);
        let text = render(&order, &views, None, Lang::En);
        assert!(text.contains("Demo (demo) · online · 2 unread"), "{text}");
        let newest = ("Alice".to_owned(), "Lunch?\nat noon".to_owned());
        let text = render(&order, &views, Some(&newest), Lang::En);
        assert!(text.ends_with("New message from Alice: Lunch?\n"), "{text}");
        assert!(text.contains("● Alice") && text.contains("[2]"), "{text}");
        assert!(text.contains("○ Bob"), "{text}");
    }

    #[test]
    fn wide_characters_take_two_columns() {
        assert_eq!(pad("王伟", 6), "王伟  ");
        assert_eq!(pad("Bob", 6), "Bob   ");
        assert_eq!(pad("longer than", 4), "longer than");
    }
}
