//! The app's words in English and Simplified Chinese: the tray's tooltip and menu, notifications and
//! the terminal view. The panels carry their own dictionary (`assets/app.js`) and get the language
//! from here, so the whole app speaks one language.

use serde::{Deserialize, Serialize};

/// A language of the user interface.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// English.
    #[default]
    En,
    /// Simplified Chinese.
    Zh,
}

impl Lang {
    /// The language of the OS locale: Chinese for any `zh` locale, English otherwise.
    pub fn from_os() -> Lang {
        Lang::from_locale(sys_locale::get_locale().as_deref().unwrap_or("en"))
    }

    /// The language for a BCP 47 or POSIX locale name.
    pub fn from_locale(locale: &str) -> Lang {
        if locale.to_ascii_lowercase().starts_with("zh") {
            Lang::Zh
        } else {
            Lang::En
        }
    }

    /// The code the panels use.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh",
        }
    }

    /// The language of a code [`Lang::code`] gives; `None` for another.
    pub fn from_code(code: &str) -> Option<Lang> {
        match code {
            "en" => Some(Lang::En),
            "zh" => Some(Lang::Zh),
            _ => None,
        }
    }

    /// The words of this language.
    pub fn words(self) -> &'static Words {
        match self {
            Lang::En => &EN,
            Lang::Zh => &ZH,
        }
    }
}

/// Every phrase the Rust side shows.
pub struct Words {
    /// The tray menu's entry to add an account.
    pub add_account: &'static str,
    /// The tray menu's entry to quit.
    pub quit: &'static str,
    /// The tooltip when no account is bound.
    pub no_accounts: &'static str,
    /// "unread" after a count.
    pub unread: &'static str,
    /// Shown after an account whose connection is down.
    pub offline: &'static str,
    /// Shown after an account that needs its password again.
    pub needs_password: &'static str,
    /// The terminal view's first line when there is no display.
    pub no_display: &'static str,
    /// The terminal view when no account is bound.
    pub terminal_no_accounts: &'static str,
    /// The title of a new-message notification, before the sender's name.
    pub new_message_from: &'static str,
    /// A notification's action that marks the chat read.
    pub mark_read: &'static str,
    /// The reply field of a notification.
    pub reply: &'static str,
    /// An incoming call's notification: the title after the caller's name.
    pub is_calling: &'static str,
    /// Its text for a video call and for a voice call.
    pub video_call: &'static str,
    /// See [`Words::video_call`].
    pub voice_call: &'static str,
    /// Its actions.
    pub accept: &'static str,
    /// See [`Words::accept`].
    pub decline: &'static str,
    /// Presence states: online, offline, busy, idle, do not disturb (the words `pinchatctl` uses).
    pub states: [&'static str; 5],
    /// The account submenu's entry that opens the panel.
    pub open: &'static str,
    /// Update modes in the account submenu.
    pub mode_push: &'static str,
    /// Polling.
    pub mode_poll: &'static str,
    /// Only on request.
    pub mode_manual: &'static str,
    /// The account submenu's switch for notifications.
    pub do_not_disturb: &'static str,
    /// "Do not disturb" for an hour.
    pub dnd_hour: &'static str,
    /// "Do not disturb" until the next morning (8:00).
    pub dnd_morning: &'static str,
    /// Before the time "do not disturb" ends ("Until 09:30").
    pub dnd_until: &'static str,
    /// The submenu of pinned contacts whose messages get through "do not disturb".
    pub let_through: &'static str,
    /// The submenu of pinned contacts that get a tray icon of their own.
    pub in_tray: &'static str,
    /// A contact's tray icon's menu: open the chat.
    pub open_chat: &'static str,
    /// A contact's tray icon's menu: take the icon away.
    pub remove_from_tray: &'static str,
    /// The language submenu.
    pub language: &'static str,
    /// The autostart switch.
    pub start_at_login: &'static str,
    /// Windows without the WebView2 runtime, which every panel needs: what to do.
    pub webview_missing: &'static str,
}

impl Words {
    /// The word for a presence state as the API spells it (`online`, `do_not_disturb`, …).
    pub fn state<'a>(&'a self, api: &'a str) -> &'a str {
        match api {
            "online" => self.states[0],
            "offline" => self.states[1],
            "busy" => self.states[2],
            "idle" => self.states[3],
            "do_not_disturb" => self.states[4],
            other => other,
        }
    }
}

static EN: Words = Words {
    add_account: "Add account…",
    quit: "Quit pinchat",
    no_accounts: "pinchat: no account yet",
    unread: "unread",
    offline: "offline",
    needs_password: "password needed",
    no_display: "No graphical display found, so there is no tray icon: showing your widgets here instead (Ctrl-C to quit).",
    terminal_no_accounts: "No account is bound yet: add one with `pinchatctl add`, or run pinchat in a graphical session.",
    new_message_from: "New message from",
    mark_read: "Mark as read",
    reply: "Reply",
    is_calling: "is calling you",
    video_call: "Video call",
    voice_call: "Voice call",
    accept: "Accept",
    decline: "Decline",
    states: ["online", "offline", "busy", "idle", "do not disturb"],
    open: "Open",
    mode_push: "Live updates (push)",
    mode_poll: "Check every few minutes (poll)",
    mode_manual: "Only when I refresh (manual)",
    do_not_disturb: "Do not disturb",
    dnd_hour: "Do not disturb for 1 hour",
    dnd_morning: "Do not disturb until tomorrow morning",
    dnd_until: "Quiet until",
    let_through: "Let through while quiet",
    in_tray: "Own icon in the tray",
    open_chat: "Open chat",
    remove_from_tray: "Remove from the tray",
    language: "Language",
    start_at_login: "Start at login",
    webview_missing: "pinchat needs the Microsoft Edge WebView2 Runtime to show its panels, and it is not installed. Install it from https://go.microsoft.com/fwlink/p/?LinkId=2124703 (Microsoft's Evergreen installer), then click the tray icon again.",
};

static ZH: Words = Words {
    add_account: "添加账号…",
    quit: "退出 pinchat",
    no_accounts: "pinchat：尚未添加账号",
    unread: "条未读",
    offline: "离线",
    needs_password: "需要重新输入密码",
    no_display: "未找到图形显示环境，无法显示托盘图标：改为在此处显示你的挂件（按 Ctrl-C 退出）。",
    terminal_no_accounts: "尚未绑定账号：请用 `pinchatctl add` 添加，或在图形会话中运行 pinchat。",
    new_message_from: "新消息来自",
    mark_read: "标为已读",
    reply: "回复",
    is_calling: "邀请你通话",
    video_call: "视频通话",
    voice_call: "语音通话",
    accept: "接听",
    decline: "拒绝",
    states: ["在线", "离线", "忙碌", "空闲", "请勿打扰"],
    open: "打开",
    mode_push: "实时更新（推送）",
    mode_poll: "每隔几分钟检查（轮询）",
    mode_manual: "仅在我刷新时（手动）",
    do_not_disturb: "免打扰",
    dnd_hour: "免打扰 1 小时",
    dnd_morning: "免打扰到明天早上",
    dnd_until: "免打扰至",
    let_through: "免打扰时仍通知",
    in_tray: "在托盘中单独显示",
    open_chat: "打开聊天",
    remove_from_tray: "从托盘中移除",
    language: "语言",
    start_at_login: "登录时启动",
    webview_missing: "pinchat 需要 Microsoft Edge WebView2 运行时来显示面板，但它尚未安装。请从 https://go.microsoft.com/fwlink/p/?LinkId=2124703 安装（微软的 Evergreen 安装程序），然后再次点击托盘图标。",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chinese_locales_get_chinese() {
        assert_eq!(Lang::from_locale("zh-CN"), Lang::Zh);
        assert_eq!(Lang::from_locale("zh_CN.UTF-8"), Lang::Zh);
        assert_eq!(Lang::from_locale("en-US"), Lang::En);
        assert_eq!(Lang::from_locale("de_DE"), Lang::En);
        assert_ne!(Lang::Zh.words().quit, Lang::En.words().quit);
    }
}
