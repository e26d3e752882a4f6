//! The messages between the tray and its panel processes, and between a panel and its page, as types.
//!
//! The tray and a panel are the same executable, talking over the panel's standard input and output one
//! line each ([`ToPanel`], [`FromPanel`]); the page talks to its panel in JSON (`{id, method, params}`,
//! [`PageMessage`]). Each has one place that writes it and one that reads it, here, so both ends agree.

use serde_json::Value;

/// What the tray tells a panel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToPanel {
    /// Come forward.
    Show,
    /// Open the chat with this contact.
    Chat(u64),
    /// Speak this language from now on.
    Lang(crate::i18n::Lang),
    /// Answer this incoming call (accepted from its OS notification).
    Answer(u64),
}

impl ToPanel {
    /// The line on the panel's standard input (with its newline).
    pub fn line(&self) -> String {
        match self {
            ToPanel::Show => "show\n".into(),
            ToPanel::Chat(c) => format!("chat {c}\n"),
            ToPanel::Lang(l) => format!("lang {}\n", l.code()),
            ToPanel::Answer(c) => format!("answer {c}\n"),
        }
    }

    /// Reads a line; `None` for anything else (ignored, for a newer tray's commands).
    pub fn parse(line: &str) -> Option<ToPanel> {
        match line.trim().split_once(' ') {
            Some(("chat", c)) => c.trim().parse().ok().map(ToPanel::Chat),
            Some(("answer", c)) => c.trim().parse().ok().map(ToPanel::Answer),
            Some(("lang", l)) => crate::i18n::Lang::from_code(l.trim()).map(ToPanel::Lang),
            None if line.trim() == "show" => Some(ToPanel::Show),
            _ => None,
        }
    }
}

/// An incoming call a panel opens on (`pinchat panel --ring <call>:<contact>:<video|voice>[:answer]`):
/// the tray heard it ring while no panel of that account was open. With `:answer` the panel answers it
/// at once (it was accepted in its OS notification).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ring {
    /// The call.
    pub call: u64,
    /// The caller.
    pub contact: u64,
    /// A video call.
    pub video: bool,
    /// Answer it on opening.
    pub answer: bool,
}

impl std::fmt::Display for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.video { "video" } else { "voice" };
        let answer = if self.answer { ":answer" } else { "" };
        write!(f, "{}:{}:{kind}{answer}", self.call, self.contact)
    }
}

impl std::str::FromStr for Ring {
    type Err = String;

    fn from_str(s: &str) -> Result<Ring, String> {
        let bad = || format!("{s:?} is not <call>:<contact>:<video|voice>[:answer]");
        let mut parts = s.split(':');
        let call = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let contact = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let video = match parts.next() {
            Some("video") => true,
            Some("voice") => false,
            _ => return Err(bad()),
        };
        let answer = match parts.next() {
            None => false,
            Some("answer") => true,
            Some(_) => return Err(bad()),
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Ring {
            call,
            contact,
            video,
            answer,
        })
    }
}

/// What a panel tells the tray.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FromPanel {
    /// An add-account panel created this widget and is its panel from now on.
    Opened(String),
    /// The chat on screen (`None`: no chat): its messages need no OS notification.
    Viewing(Option<u64>),
    /// The panel's window got (`true`) or lost keyboard focus. A popover that lost it closes itself
    /// right after saying so; the tray uses the time to tell "the tray click took the focus away"
    /// from "the panel was left behind other windows".
    Focus(bool),
    /// The person resized the window: its inner size now, in logical pixels (remembered for next time).
    Size(u32, u32),
    /// The person moved the window away from where the tray put it: its top-left corner now, in
    /// physical pixels (remembered for next time).
    Moved(i32, i32),
    /// The panel is closing (Esc, its close button, focus lost): the tray no longer counts it, even
    /// though its process takes a moment to end.
    Closing,
}

impl FromPanel {
    /// The line on the panel's standard output (with its newline); `None` when it cannot be one line.
    pub fn line(&self) -> Option<String> {
        match self {
            FromPanel::Opened(w) if !w.is_empty() && !w.contains(char::is_whitespace) => {
                Some(format!("opened {w}\n"))
            }
            FromPanel::Opened(_) => None,
            FromPanel::Viewing(Some(c)) => Some(format!("viewing {c}\n")),
            FromPanel::Viewing(None) => Some("viewing -\n".into()),
            FromPanel::Focus(on) => Some(format!("focus {}\n", if *on { "on" } else { "off" })),
            FromPanel::Size(w, h) => Some(format!("size {w} {h}\n")),
            FromPanel::Moved(x, y) => Some(format!("moved {x} {y}\n")),
            FromPanel::Closing => Some("closing\n".into()),
        }
    }

    /// Reads a line; `None` for anything else.
    pub fn parse(line: &str) -> Option<FromPanel> {
        let line = line.trim();
        if line == "closing" {
            return Some(FromPanel::Closing);
        }
        if let Some(c) = line.strip_prefix("viewing ") {
            return match c.trim() {
                "-" => Some(FromPanel::Viewing(None)),
                c => c.parse().ok().map(|c| FromPanel::Viewing(Some(c))),
            };
        }
        match line.split_once(' ') {
            Some(("focus", "on")) => return Some(FromPanel::Focus(true)),
            Some(("focus", "off")) => return Some(FromPanel::Focus(false)),
            Some(("size", wh)) => {
                let (w, h) = wh.split_once(' ')?;
                return Some(FromPanel::Size(w.parse().ok()?, h.parse().ok()?));
            }
            Some(("moved", xy)) => {
                let (x, y) = xy.split_once(' ')?;
                return Some(FromPanel::Moved(x.parse().ok()?, y.parse().ok()?));
            }
            _ => {}
        }
        let w = line.strip_prefix("opened ")?;
        (!w.is_empty() && !w.contains(char::is_whitespace)).then(|| FromPanel::Opened(w.to_owned()))
    }
}

/// What the page asks of its panel.
#[derive(Clone, Debug, PartialEq)]
pub enum PageMessage {
    /// Close this panel.
    Close {
        /// Request id.
        id: u64,
    },
    /// This panel shows another widget now: an add-account panel created it, or the person chose
    /// another account in the panel (the tray learns it through [`FromPanel::Opened`]).
    Opened {
        /// Request id.
        id: u64,
        /// The widget.
        widget: Option<String>,
        /// The account's name, for the window's title.
        name: Option<String>,
    },
    /// The page has drawn its first view: the window can be shown without a blank frame.
    Painted {
        /// Request id.
        id: u64,
        /// The language the page speaks (a page reloaded in another language says so again).
        lang: Option<String>,
    },
    /// Whether the panel stays open when it loses focus: `true` while the person is logging in or
    /// picking contacts, or has pinned the panel open; `false` makes it a popover again.
    KeepOpen {
        /// Request id.
        id: u64,
        /// Stay open on focus loss.
        keep: bool,
    },
    /// The page shows this contact's chat now (`None`: no chat).
    Viewing {
        /// Request id.
        id: u64,
        /// The contact.
        contact: Option<u64>,
    },
    /// Open a link of a message in the system's browser.
    OpenUrl {
        /// Request id.
        id: u64,
        /// The link (only `http` and `https` are opened).
        url: String,
    },
    /// A request to the panel's native call engine (`ui.media`, see `media.rs`); `Err` says why
    /// the parameters cannot be read.
    Media {
        /// Request id.
        id: u64,
        /// What to do.
        op: Result<crate::media::MediaOp, String>,
    },
    /// A call of the local API, passed on to the daemon (if it is one of the allowed methods).
    Call {
        /// Request id.
        id: u64,
        /// The method.
        method: String,
        /// Its parameters.
        params: Value,
    },
}

impl PageMessage {
    /// Reads what the page posted; `None` when it is not JSON.
    pub fn parse(body: &str) -> Option<PageMessage> {
        let msg: Value = serde_json::from_str(body).ok()?;
        let id = msg.get("id").and_then(Value::as_u64).unwrap_or(0);
        let method = msg.get("method").and_then(Value::as_str).unwrap_or("").to_owned();
        let params = msg.get("params").cloned().unwrap_or(Value::Null);
        Some(match method.as_str() {
            "ui.close" => PageMessage::Close { id },
            "ui.opened" => PageMessage::Opened {
                id,
                widget: params.get("widget").and_then(Value::as_str).map(str::to_owned),
                name: params.get("name").and_then(Value::as_str).map(str::to_owned),
            },
            "ui.painted" => PageMessage::Painted {
                id,
                lang: params.get("lang").and_then(Value::as_str).map(str::to_owned),
            },
            "ui.keep_open" => PageMessage::KeepOpen {
                id,
                keep: params.get("keep").and_then(Value::as_bool).unwrap_or(true),
            },
            "ui.open_url" => PageMessage::OpenUrl {
                id,
                url: params.get("url").and_then(Value::as_str).unwrap_or("").to_owned(),
            },
            "ui.viewing" => PageMessage::Viewing {
                id,
                contact: params.get("contact").and_then(Value::as_u64),
            },
            "ui.media" => PageMessage::Media {
                id,
                op: crate::media::MediaOp::parse(&params),
            },
            _ => PageMessage::Call { id, method, params },
        })
    }
}

/// Whether a message's link may be handed to the system's browser: a web address, nothing else (no
/// `file:`, no custom schemes that start programs), of sane length, without spaces or control
/// characters.
pub fn openable(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    let host = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    host.is_some_and(|h| !h.is_empty() && !h.starts_with('/'))
        && url.len() <= 2048
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_round_trips_through_its_argument_and_odd_ones_are_refused() {
        let mut ring = Ring {
            call: 7,
            contact: 42,
            video: true,
            answer: false,
        };
        assert_eq!(ring.to_string(), "7:42:video");
        assert_eq!("7:42:video".parse::<Ring>(), Ok(ring));
        assert_eq!("3:4:voice".parse::<Ring>().map(|r| r.video), Ok(false));
        ring.answer = true;
        assert_eq!(ring.to_string(), "7:42:video:answer");
        assert_eq!("7:42:video:answer".parse::<Ring>(), Ok(ring));
        for bad in [
            "",
            "7",
            "7:42",
            "7:42:film",
            "x:42:video",
            "7:42:video:1",
            "7:42:video:answer:x",
        ] {
            assert!(bad.parse::<Ring>().is_err(), "{bad}");
        }
    }

    #[test]
    fn control_lines_round_trip_and_odd_lines_are_ignored() {
        for m in [
            ToPanel::Show,
            ToPanel::Chat(42),
            ToPanel::Lang(crate::i18n::Lang::Zh),
            ToPanel::Answer(7),
        ] {
            assert_eq!(ToPanel::parse(&m.line()), Some(m));
        }
        assert_eq!(ToPanel::parse("chat forty-two"), None);
        assert_eq!(ToPanel::parse("dance"), None);
        let o = FromPanel::Opened("w0123".into());
        assert_eq!(FromPanel::parse(&o.line().unwrap()), Some(o));
        assert_eq!(FromPanel::Opened("two words".into()).line(), None);
        assert_eq!(FromPanel::parse("opened "), None);
        for v in [FromPanel::Viewing(Some(7)), FromPanel::Viewing(None)] {
            assert_eq!(FromPanel::parse(&v.line().unwrap()), Some(v));
        }
        assert_eq!(FromPanel::parse("viewing seven"), None);
        for m in [
            FromPanel::Focus(true),
            FromPanel::Focus(false),
            FromPanel::Size(420, 640),
            FromPanel::Moved(-12, 300),
            FromPanel::Closing,
        ] {
            assert_eq!(FromPanel::parse(&m.line().unwrap()), Some(m));
        }
        assert_eq!(FromPanel::parse("focus maybe"), None);
        assert_eq!(FromPanel::parse("size 420"), None);
        assert_eq!(FromPanel::parse("moved a b"), None);
        assert_eq!(
            PageMessage::parse(r#"{"id":8,"method":"ui.keep_open","params":{"keep":false}}"#),
            Some(PageMessage::KeepOpen { id: 8, keep: false })
        );
        assert_eq!(
            PageMessage::parse(r#"{"id":9,"method":"ui.painted"}"#),
            Some(PageMessage::Painted { id: 9, lang: None })
        );
        assert_eq!(
            PageMessage::parse(r#"{"id":6,"method":"ui.viewing","params":{"contact":9}}"#),
            Some(PageMessage::Viewing {
                id: 6,
                contact: Some(9)
            })
        );
        assert_eq!(
            PageMessage::parse(r#"{"id":6,"method":"ui.viewing","params":{"contact":null}}"#),
            Some(PageMessage::Viewing { id: 6, contact: None })
        );
        assert_eq!(
            PageMessage::parse(r#"{"id":3,"method":"ui.opened","params":{"widget":"w1"}}"#),
            Some(PageMessage::Opened {
                id: 3,
                widget: Some("w1".into()),
                name: None,
            })
        );
        assert_eq!(
            PageMessage::parse(r#"{"id":4,"method":"ui.close"}"#),
            Some(PageMessage::Close { id: 4 })
        );
        assert!(matches!(
            PageMessage::parse(r#"{"id":5,"method":"widget.snapshot","params":{"widget":"w1"}}"#),
            Some(PageMessage::Call { id: 5, .. })
        ));
        assert_eq!(PageMessage::parse("not json"), None);
        assert_eq!(
            PageMessage::parse(r#"{"id":7,"method":"ui.open_url","params":{"url":"https://a.example/x"}}"#),
            Some(PageMessage::OpenUrl {
                id: 7,
                url: "https://a.example/x".into()
            })
        );
    }

    #[test]
    fn only_web_links_are_opened() {
        assert!(openable("https://example.com/a?b=c"));
        assert!(openable("HTTP://example.com"));
        for bad in [
            "file:///etc/passwd",
            "javascript:alert(1)",
            "smb://host/share",
            "https://",
            "https://a b",
            "https://a\nb",
            "",
        ] {
            assert!(!openable(bad), "{bad:?}");
        }
    }
}
