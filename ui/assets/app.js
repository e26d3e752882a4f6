// pinchat panels: one page, several views (login, contact picker, widget, unread details, chat,
// re-authentication). Everything goes through the daemon's local API via the app:
// window.ipc.postMessage({id, method, params}) → window.pinchat.reply(id, ok, value);
// daemon notifications arrive through window.pinchat.event({method, params}).
"use strict";

const WORDS = {
  en: {
    addAccount: "Add an account", server: "Server", account: "Account", password: "Password", cancel: "Cancel",
    replacesAccount: "The account you log in with replaces {login} in this widget; its pinned contacts go with it.",
    logIn: "Log in", loggingIn: "Logging in…", pick: "Pick contacts", picked: "{n} of {max} picked",
    search: "Search contacts", done: "Done", refresh: "Refresh", changeAccount: "Change account",
    pickAgain: "Pick contacts", back: "Back", close: "Close", unreadFrom: "Unread from {name}",
    noUnread: "No unread messages.", noPins: "No pinned contacts yet.", send: "Send",
    typeMessage: "Write a message", typeHint: "Enter sends, Shift+Enter starts a new line",
    olderLoading: "Loading older messages…", noMessages: "No messages yet.",
    today: "Today", yesterday: "Yesterday",
    reauthTitle: "Password needed", reauthText: "The server no longer accepts this account's key. Enter the password to log in again.",
    unread: "unread", limit: "You can pin up to {max} contacts.",
    online: "online", offline: "offline", busy: "busy", idle: "idle", do_not_disturb: "do not disturb",
    conn_online: "connected", conn_borrowed: "connected via your pinchat client",
    conn_borrowed_hint: "Your full pinchat client is running: this widget uses its connection instead of a second one of its own.", conn_offline: "offline — showing what was last received",
    conn_connecting: "connecting…", conn_auth_required: "password needed",
    storage: "cannot save new messages: disk full or read-only",
    queued: "queued", sent: "sent", read: "read", failed: "not sent", received: "",
    keepOpen: "Keep this panel open when you click elsewhere", accounts: "Accounts",
    signIn: "Log in to pinchat", logOut: "Log out", noContacts: "No contacts yet.", noMatch: "No contact matches.",
    textChat: "Text chat", videoCall: "Video call", voiceCall: "Voice call",
    call_calling: "calling…", call_ringing: "ringing…", call_incoming: "is calling you",
    call_incoming_video: "video call", call_incoming_voice: "voice call",
    call_connecting: "connecting…", call_connected: "connected", call_reconnecting: "reconnecting…", call_ended: "call ended",
    accept: "Accept", decline: "Decline", hangUp: "Hang up", mute: "Mute", unmute: "Unmute",
    cameraOff: "Camera off", cameraOn: "Camera on",
    callOffline: "Calls need the connection to the server, and it is not up right now.",
    rec_in_video: "Incoming video call", rec_in_voice: "Incoming voice call",
    rec_out_video: "Outgoing video call", rec_out_voice: "Outgoing voice call",
    rec_missed_video: "Missed video call", rec_missed_voice: "Missed voice call",
    rec_declined_video: "Declined video call", rec_declined_voice: "Declined voice call",
    rec_end: { declined: "declined", no_answer: "no answer", cancelled: "cancelled", other: "not connected" },
    callBack: "Call back",
    noMicrophone: "No microphone found: {name} cannot hear you.",
    awayPeer: "{name}'s connection to the server dropped; the call waits for it to come back.",
    awayOwn: "Your connection to the server dropped; the call goes on while it reconnects.",
    noCamera: "No camera found: {name} sees no picture of you.",
    end: {
      hangup: "The call has ended.", declined: "{name} declined the call.", no_answer: "No answer.",
      answered_elsewhere: "Answered on another device.", cancelled: "{name} hung up before you answered.",
      connection_lost: "The connection was lost.", glare: "You called each other at once; the other call goes on.",
      unavailable: "{name} cannot take calls right now.", failed: "The call could not connect.",
    },
    err: {
      "auth.bad_credentials": "Wrong account name or password.",
      "server.unreachable": "Cannot reach the server. Check its address and your network.",
      "widget.exists": "This account is already added.",
      "widget.too_many_pins": "Too many contacts picked.",
      "widget.not_contact": "That person is not among this account's contacts.",
      "keyring.unavailable": "The system keyring is locked or unavailable; unlock it and try again.",
      "storage.full": "The disk is full, so the message was not saved. Free some space and try again.",
      "storage.read_only": "pinchat's data folder cannot be written, so the message was not saved.",
      "widget.invalid": "Please check what you typed.",
      "ui.daemon_unreachable": "The pinchat daemon is not answering.",
      "ui.invalid_link": "Only web links (http or https) are opened.",
      "ui.cannot_open": "No web browser could open the link. Copy it into your browser instead.",
      "call.unavailable": "This contact cannot be called now: they are offline or have not pinned you.",
      "call.busy": "One of you is already in a call.",
      "call.glare": "You called each other at once; the other call goes on.",
      "call.not_found": "That call has ended.",
      "call.invalid": "The call could not be set up.",
      "ui.media_unavailable": "Calls cannot start on this computer: the call engine is missing.",
      "ui.no_devices": "pinchat may not use the camera and microphone. Allow it in the system's privacy settings, then call again.",
    },
  },
  zh: {
    addAccount: "添加账号", server: "服务器", account: "账号", password: "密码", cancel: "取消",
    replacesAccount: "登录的账号将替换此挂件中的 {login}，原来挂出的联系人也会一并移除。",
    logIn: "登录", loggingIn: "正在登录…", pick: "选择联系人", picked: "已选 {n} / {max}",
    search: "搜索联系人", done: "完成", refresh: "刷新", changeAccount: "切换账号",
    pickAgain: "选择联系人", back: "返回", close: "关闭", unreadFrom: "{name} 的未读消息",
    noUnread: "没有未读消息。", noPins: "还没有挂出的联系人。", send: "发送",
    typeMessage: "输入消息", typeHint: "回车发送，Shift+回车换行",
    olderLoading: "正在加载更早的消息…", noMessages: "还没有消息。",
    today: "今天", yesterday: "昨天",
    reauthTitle: "需要密码", reauthText: "服务器不再接受该账号的密钥，请输入密码重新登录。",
    unread: "条未读", limit: "最多可以挂出 {max} 位联系人。",
    online: "在线", offline: "离线", busy: "忙碌", idle: "空闲", do_not_disturb: "请勿打扰",
    conn_online: "已连接", conn_borrowed: "经由你的 pinchat 客户端连接",
    conn_borrowed_hint: "完整的 pinchat 客户端正在运行：此小部件借用它的连接，而不另开一个。", conn_offline: "离线——显示最后收到的内容",
    conn_connecting: "正在连接…", conn_auth_required: "需要密码",
    storage: "无法保存新消息：磁盘已满或只读",
    queued: "待发送", sent: "已发送", read: "已读", failed: "发送失败", received: "",
    keepOpen: "点击其他地方时保持此面板打开", accounts: "账号",
    signIn: "登录 pinchat", logOut: "退出登录", noContacts: "还没有联系人。", noMatch: "没有匹配的联系人。",
    textChat: "文字聊天", videoCall: "视频通话", voiceCall: "语音通话",
    call_calling: "正在呼叫…", call_ringing: "等待对方接听…", call_incoming: "邀请你通话",
    call_incoming_video: "视频通话", call_incoming_voice: "语音通话",
    call_connecting: "正在连接…", call_connected: "通话中", call_reconnecting: "正在重新连接…", call_ended: "通话已结束",
    accept: "接听", decline: "拒绝", hangUp: "挂断", mute: "静音", unmute: "取消静音",
    cameraOff: "关闭摄像头", cameraOn: "打开摄像头",
    callOffline: "通话需要连接服务器，但现在没有连接。",
    rec_in_video: "视频来电", rec_in_voice: "语音来电",
    rec_out_video: "视频去电", rec_out_voice: "语音去电",
    rec_missed_video: "未接视频来电", rec_missed_voice: "未接语音来电",
    rec_declined_video: "已拒绝视频来电", rec_declined_voice: "已拒绝语音来电",
    rec_end: { declined: "对方已拒绝", no_answer: "无人接听", cancelled: "已取消", other: "未接通" },
    callBack: "回拨",
    noMicrophone: "未找到麦克风：{name} 听不到你的声音。",
    awayPeer: "{name} 与服务器的连接中断，通话正在等待其恢复。",
    awayOwn: "你与服务器的连接中断，正在重新连接，通话继续。",
    noCamera: "未找到摄像头：{name} 看不到你的画面。",
    end: {
      hangup: "通话已结束。", declined: "{name} 拒绝了通话。", no_answer: "无人接听。",
      answered_elsewhere: "已在其他设备上接听。", cancelled: "{name} 在你接听前挂断了。",
      connection_lost: "连接已中断。", glare: "双方同时呼叫，保留了另一通通话。",
      unavailable: "{name} 现在无法接听通话。", failed: "通话无法接通。",
    },
    err: {
      "auth.bad_credentials": "账号或密码错误。",
      "server.unreachable": "无法连接服务器，请检查地址和网络。",
      "widget.exists": "该账号已经添加。",
      "widget.too_many_pins": "选择的联系人太多。",
      "widget.not_contact": "此人不是该账号的联系人。",
      "keyring.unavailable": "系统钥匙串已锁定或不可用，请解锁后重试。",
      "storage.full": "磁盘已满，消息没有保存。请释放一些空间后重试。",
      "storage.read_only": "pinchat 的数据文件夹无法写入，消息没有保存。",
      "widget.invalid": "请检查输入的内容。",
      "ui.daemon_unreachable": "pinchat 后台服务没有响应。",
      "ui.invalid_link": "只会打开网页链接（http 或 https）。",
      "ui.cannot_open": "没有浏览器能打开此链接，请复制到浏览器中打开。",
      "call.unavailable": "现在无法呼叫此联系人：对方离线，或没有挂出你。",
      "call.busy": "你们中有一方正在通话。",
      "call.glare": "双方同时呼叫，保留了另一通通话。",
      "call.not_found": "该通话已结束。",
      "call.invalid": "无法建立通话。",
      "ui.media_unavailable": "此电脑无法开始通话：缺少通话组件。",
      "ui.no_devices": "pinchat 无权使用摄像头和麦克风。请在系统隐私设置中允许后再次呼叫。",
    },
  },
};

const params = new URLSearchParams(location.search);
// The full client's window (pinchat-full): every contact of the account, searchable, instead of a
// widget's pinned few; the same views otherwise, answered by that program instead of the daemon.
const full = params.get("mode") === "full";
const lang = WORDS[params.get("lang")] ? params.get("lang") : "en";
const W = WORDS[lang];
document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";

function t(key, vars) {
  let s = W[key] ?? key;
  for (const [k, v] of Object.entries(vars || {})) s = s.replace("{" + k + "}", v);
  return s;
}
function errorText(e) {
  return (e && W.err[e.code]) || (e && e.message) || String(e);
}

// ---- The bridge to the app -------------------------------------------------------------------
let nextId = 1;
const waiting = new Map();
window.pinchat = {
  reply(id, ok, value) {
    const w = waiting.get(id);
    if (!w) return;
    waiting.delete(id);
    ok ? w.resolve(value) : w.reject(value);
  },
  event(n) { onEvent(n); },
  // News from the native call engine (set while a call runs through it).
  media() {},
  // The tray's language changed: the page comes back in it, on the same widget and chat.
  setLang(code) {
    if (code === lang || !WORDS[code]) return;
    const p = new URLSearchParams(location.search);
    p.set("lang", code);
    p.delete("chat");
    if (keepOpen) p.set("keep", "1"); else p.delete("keep");
    if (state.widget) {
      p.set("view", "widget");
      p.set("widget", state.widget);
      if (state.screen === "chat" && state.chatWith != null) p.set("chat", state.chatWith);
    }
    location.search = p.toString();
  },
  // An activated notification: show the chat with this contact.
  async openChat(contact) {
    if (!state.view) await loadWidget();
    // A call on screen stays there: the chat is a click away once it ends.
    if (activeCall && activeCall.phase !== "ended") return;
    const c = state.view.pins.find((p) => p.id === contact);
    if (c) chatView(c);
  },
  // Accepted in its OS notification: answer the call that rings here, or as soon as it does (the
  // page may not have heard it ring yet).
  answer(callId) {
    if (activeCall && activeCall.id === callId && activeCall.phase === "incoming") {
      if (state.screen !== "call") callView();
      acceptCall();
    } else if (!activeCall || activeCall.phase === "ended") {
      answerWhenRinging = callId;
    }
  },
};
function call(method, params) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    waiting.set(id, { resolve, reject });
    window.ipc.postMessage(JSON.stringify({ id, method, params: params || {} }));
  });
}

// ---- Small DOM helpers -----------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else if (v !== false && v != null) el.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c != null) el.append(c.nodeType ? c : String(c));
  return el;
}
// A panel is not a web page: the engine's menu (back, reload, inspect) is of no use, except to copy and
// paste in a text field.
document.addEventListener("contextmenu", (e) => {
  if (!e.target.closest || !e.target.closest("input, textarea")) e.preventDefault();
});
// The tray shows no OS notification for the chat on screen: it is told which one that is.
let viewing = null;
function tellViewing() {
  const now = state.screen === "chat" ? state.chatWith : null;
  if (now === viewing) return;
  viewing = now;
  call("ui.viewing", { contact: now }).catch(() => {});
}
// What identifies an element across a re-render of its view, for keeping keyboard focus on it.
function focusKey(el) {
  if (!el || !el.getAttribute) return null;
  if (el.id) return "#" + CSS.escape(el.id);
  for (const a of ["data-contact", "data-unread", "data-message"]) {
    if (el.hasAttribute(a)) return `${el.tagName.toLowerCase()}[${a}="${CSS.escape(el.getAttribute(a))}"]`;
  }
  return null;
}
// A panel opened from the tray is a popover: it closes when the person clicks elsewhere — except while
// they log in or pick contacts (they may be looking up a password or a name elsewhere), or when they
// have pinned it open.
let keepOpen = params.get("keep") === "1";
let toldKeepOpen = null;
function tellKeepOpen() {
  const keep = keepOpen || ["login", "picker", "reauth", "call"].includes(state.screen);
  if (keep === toldKeepOpen) return;
  toldKeepOpen = keep;
  call("ui.keep_open", { keep }).catch(() => {});
}
// The window stays hidden until the first view is in the page: no blank frame while it opens.
let painted = false;
let shownScreen = null;
function show(...nodes) {
  const app = document.getElementById("app");
  // A live update redraws the view on screen: keyboard focus (and the list's scroll) stay put.
  const same = shownScreen === state.screen;
  const focused = app.contains(document.activeElement) ? focusKey(document.activeElement) : null;
  const scrolled = same ? [...app.querySelectorAll(".scroll")].map((s) => s.scrollTop) : [];
  // A view's optional parts (the account tabs with one account) are null: nothing, not the word.
  app.replaceChildren(...nodes.filter((n) => n != null));
  shownScreen = state.screen;
  tellViewing();
  tellKeepOpen();
  if (!painted) {
    painted = true;
    call("ui.painted", { lang }).catch(() => {});
  }
  if (same) {
    app.querySelectorAll(".scroll").forEach((s, i) => { if (scrolled[i] != null) s.scrollTop = scrolled[i]; });
    const again = focused && app.querySelector(focused);
    if (again) again.focus();
    return;
  }
  // Keyboard focus starts on what the view is about: a marked field, else a field, a row, a button.
  const first = ["[autofocus]", "input", "li[tabindex]", "button"].map((q) => app.querySelector(q)).find(Boolean);
  if (first) first.focus();
}
// Avatar images come through the daemon (the page itself reaches no network), once per hash.
const avatarImages = new Map();
function avatarImage(image) {
  if (!avatarImages.has(image)) {
    avatarImages.set(image, call("widget.avatar", { widget: state.widget, hash: image })
      .then((a) => `data:${a.mime};base64,${a.data}`)
      .catch(() => null));
  }
  return avatarImages.get(image);
}
function avatar(name, state_, image) {
  let hash = 0;
  for (const c of name || "?") hash = (hash * 31 + c.codePointAt(0)) >>> 0;
  const el = h("div", { class: "avatar", "aria-hidden": "true" }, [...(name || "?")][0].toUpperCase());
  el.style.background = `hsl(${hash % 360} 55% 45%)`;
  if (image && state.widget) {
    avatarImage(image).then((src) => {
      if (src) el.prepend(h("img", { src, alt: "" }));
    });
  }
  if (state_) el.append(h("span", { class: "state " + state_, title: t(state_) }));
  return el;
}
const locale = lang === "zh" ? "zh-CN" : "en";
function dayKey(d) { return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`; }
// "Today", "Yesterday", or the date (with the year when it is not this one).
function dayLabel(ts) {
  const d = new Date(ts), now = new Date(), yesterday = new Date(now);
  yesterday.setDate(now.getDate() - 1);
  if (dayKey(d) === dayKey(now)) return t("today");
  if (dayKey(d) === dayKey(yesterday)) return t("yesterday");
  const opts = { month: "short", day: "numeric", ...(d.getFullYear() === now.getFullYear() ? {} : { year: "numeric" }) };
  return d.toLocaleDateString(locale, opts);
}
// The time of day; the day too when it is not today (in lists without day separators).
function when(ts, withDay) {
  const d = new Date(ts);
  const time = d.toLocaleTimeString(locale, { hour: "2-digit", minute: "2-digit" });
  return withDay && dayKey(d) !== dayKey(new Date()) ? `${dayLabel(ts)} ${time}` : time;
}
// A message's text with its web links clickable; they open in the system's browser.
function linked(text) {
  const out = [];
  let last = 0;
  for (const m of text.matchAll(/\bhttps?:\/\/[^\s<>"]+[^\s<>".,;:!?)\]'"]/g)) {
    if (m.index > last) out.push(text.slice(last, m.index));
    const url = m[0];
    out.push(h("a", { href: url, class: "link", onclick: (e) => { e.preventDefault(); call("ui.open_url", { url }).catch((err) => alert(errorText(err))); } }, url));
    last = m.index + url.length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}
// Day separators in a chat: one before the first message of each day.
function separateDays(box) {
  box.querySelectorAll(":scope > .day").forEach((d) => d.remove());
  let previous = null;
  for (const el of [...box.children]) {
    if (!el.dataset.ts) continue;
    const key = dayKey(new Date(Number(el.dataset.ts)));
    if (key !== previous) el.before(h("div", { class: "day", role: "separator" }, dayLabel(Number(el.dataset.ts))));
    previous = key;
  }
}
// An unread count as a badge says it: the number up to 99, then "99+" (as the tray icon).
function countLabel(n) { return n > 99 ? "99+" : String(n); }
function activate(el, fn) {
  el.addEventListener("click", fn);
  el.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); fn(); } });
  return el;
}

// Keyboard: arrows move between rows, Esc goes back (and closes the panel from its first view).
document.addEventListener("keydown", (e) => {
  const el = document.activeElement;
  if ((e.key === "ArrowDown" || e.key === "ArrowUp") && el && el.matches && el.matches("li[tabindex]")) {
    const rows = [...el.parentElement.querySelectorAll(":scope > li[tabindex]")];
    const next = rows[rows.indexOf(el) + (e.key === "ArrowDown" ? 1 : -1)];
    if (next) { e.preventDefault(); next.focus(); }
  } else if (e.key === "Escape") {
    e.preventDefault();
    // A call is left by hanging up, not by a stray key.
    if (state.screen === "call") return;
    if (state.screen === "chat" || state.screen === "details" || (state.screen === "picker" && state.view)) {
      state.chat = null;
      widgetView();
    } else if (!full) {
      call("ui.close").catch(() => {});
    }
  }
});

// ---- State -----------------------------------------------------------------------------------
const state = { widget: params.get("widget"), view: null, screen: null, chat: null };

// ---- Login (Fig. 2) --------------------------------------------------------------------------
function loginView(rebind) {
  state.screen = "login";
  const err = h("div", { class: "error", role: "alert" });
  // The server is one the app knows: this widget's own when changing its account, else that of the
  // newest account added (the demo's own in the demo); empty, with an example, when there is none.
  let touched = false;
  const server = h("input", { type: "text", id: "server", placeholder: "https://chat.example.com", autocomplete: "url",
    onfocus: () => { touched = true; } });
  if (rebind && state.view) server.value = state.view.server;
  else if (full && params.get("server")) server.value = params.get("server");
  else call("widget.list").then((list) => {
    if (!touched && !server.value && list.length) server.value = list[list.length - 1].server;
  }).catch(() => {});
  const account = h("input", { type: "text", id: "account", autofocus: true, autocomplete: "username" });
  if (full && params.get("account")) account.value = params.get("account");
  const password = h("input", { type: "password", id: "password", autocomplete: "current-password" });
  const submit = h("button", { class: "primary", type: "submit", id: "login" }, t("logIn"));
  const form = h("form", { class: "pad", onsubmit: async (e) => {
    e.preventDefault();
    err.textContent = "";
    submit.disabled = true;
    submit.textContent = t("loggingIn");
    const login = { server: server.value.trim(), account: account.value.trim(), password: password.value };
    try {
      const created = rebind
        ? await call("widget.rebind", { widget: state.widget, ...login })
        : await call("widget.create", login);
      password.value = "";
      state.widget = created.widget.id;
      state.view = created.widget;
      if (full) {
        // The full client lists every contact: nothing to pick.
        call("ui.opened", { name: created.widget.account.name }).catch(() => {});
        widgetView();
        return;
      }
      await call("ui.opened", { widget: state.widget });
      pickerView(created.contacts, created.max_pins, []);
    } catch (e) {
      err.textContent = errorText(e);
      submit.disabled = false;
      submit.textContent = t("logIn");
    }
  } },
    h("label", { for: "server" }, t("server")), server,
    h("label", { for: "account" }, t("account")), account,
    h("label", { for: "password" }, t("password")), password,
    err,
    rebind
      ? h("div", { class: "row-buttons" },
        h("button", { type: "button", id: "cancel", onclick: widgetView }, t("cancel")), submit)
      : submit);
  // Changing the account replaces the current one in this widget: say so before it happens.
  const replaces = rebind && state.view
    ? h("p", { class: "note pad", id: "replaces" }, t("replacesAccount").replace("{login}", state.view.account.login))
    : null;
  show(h("header", {}, h("h1", {}, rebind ? t("changeAccount") : full ? t("signIn") : t("addAccount"))), h("div", { class: "scroll" }, replaces, form));
}

// ---- Contact picker (Fig. 3) -----------------------------------------------------------------
function pickerView(contacts, max, pinned) {
  state.screen = "picker";
  const chosen = new Set(pinned);
  const count = h("span", { class: "note", id: "picked", "aria-live": "polite" });
  const done = h("button", { class: "primary", id: "done" }, t("done"));
  const list = h("ul", { class: "list", id: "contacts", "aria-label": t("pick") });
  const search = h("input", { type: "search", id: "search", placeholder: t("search"), "aria-label": t("search"), autofocus: true });
  const err = h("div", { class: "error", role: "alert" });
  function refreshCount() {
    count.textContent = t("picked", { n: chosen.size, max });
    for (const box of list.querySelectorAll("input")) box.disabled = !box.checked && chosen.size >= max;
  }
  let shownQuery = null;
  function render() {
    const q = search.value.trim().toLowerCase();
    // Rebuild only when the filter changed: a rebuild under a pending click would swallow it.
    if (q === shownQuery) return;
    shownQuery = q;
    list.replaceChildren(...contacts
      .filter((c) => !q || c.name.toLowerCase().includes(q) || c.login.toLowerCase().includes(q))
      .map((c) => {
        const box = h("input", { type: "checkbox", id: "c" + c.id, "data-contact": c.id, checked: chosen.has(c.id) });
        box.addEventListener("change", () => {
          if (box.checked) chosen.add(c.id); else chosen.delete(c.id);
          refreshCount();
        });
        return h("li", {}, box, avatar(c.name, null, c.avatar),
          h("label", { for: "c" + c.id, class: "who" }, h("div", { class: "name" }, c.name), h("div", { class: "sig" }, c.signature || c.login)));
      }));
    refreshCount();
  }
  // "change" too: clearing a field (the x button, or a WebDriver clear) does not fire "input".
  for (const ev of ["input", "change", "search"]) search.addEventListener(ev, render);
  done.addEventListener("click", async () => {
    try {
      state.view = await call("widget.set_pins", { widget: state.widget, pins: [...chosen] });
      widgetView();
    } catch (e) { err.textContent = errorText(e); }
  });
  show(h("header", {}, h("h1", {}, t("pick"), h("span", { class: "sub" }, t("limit", { max })))),
    h("div", { class: "pad" }, search), h("div", { class: "scroll" }, list), err,
    h("div", { class: "bar" }, count, h("span", { class: "grow" }), done));
  render();
}

// ---- Widget (Fig. 4) -------------------------------------------------------------------------
async function loadWidget() {
  state.view = await call("widget.snapshot", { widget: state.widget });
}
// The full client's search field: one element for the window's life, so that live updates (which
// redraw the view) never interrupt typing; the list follows it as it is typed.
let searchField = null;
function fullSearch() {
  if (!searchField) {
    searchField = h("input", { type: "search", id: "search", placeholder: t("search"), "aria-label": t("search") });
    for (const ev of ["input", "change", "search"]) searchField.addEventListener(ev, () => {
      if (searchField.value === (state.query || "")) return;
      state.query = searchField.value;
      const list = document.getElementById("pins");
      if (list && state.view) fillContacts(list, state.view);
    });
  }
  return searchField;
}
// The widget's pinned contacts — in the full client every contact, narrowed by the search.
function fillContacts(list, v) {
  const query = full ? (state.query || "").trim().toLowerCase() : "";
  const shown = !query ? v.pins : v.pins.filter((c) =>
    [c.name, c.signature, c.status].some((s) => (s || "").toLowerCase().includes(query)));
  list.replaceChildren();
  for (const c of shown) {
    const count = c.unread > 0
      ? h("button", { class: "count", "data-unread": c.id, "aria-label": `${c.unread} ${t("unread")}`, onclick: (e) => { e.stopPropagation(); detailsView(c); } }, countLabel(c.unread))
      : null;
    const row = h("li", { tabindex: "0", "data-contact": c.id, "aria-label": `${c.name}, ${t(c.state)}` },
      avatar(c.name, c.state, c.avatar),
      h("div", { class: "who" }, h("div", { class: "name" }, c.name), h("div", { class: "sig" }, c.status || c.signature)),
      count, callButtons(c));
    activate(row, () => chatView(c));
    list.append(row);
  }
  if (!shown.length) {
    const empty = !full ? t("noPins") : query ? t("noMatch") : v.connection === "connecting" ? t("conn_connecting") : t("noContacts");
    list.append(h("li", { class: "empty", id: "no-contacts" }, empty));
  }
}
function widgetView() {
  state.screen = "widget";
  const v = state.view;
  if (!v) return;
  if (v.connection === "auth_required") return reauthView();
  const me = v.account;
  const list = h("ul", { class: "list", id: "pins" });
  const search = full ? fullSearch() : null;
  fillContacts(list, v);
  // A disk that cannot take what arrives matters more than the link: say so (the daemon's words on hover).
  const conn = v.storage
    ? h("span", { class: "conn storage", id: "connection", title: v.storage }, t("storage"))
    : v.connection === "online" && v.via && v.via.kind === "full_client"
      ? h("span", { class: "conn online borrowed", id: "connection", title: t("conn_borrowed_hint") }, t("conn_borrowed"))
      : h("span", { class: "conn " + v.connection, id: "connection" }, t("conn_" + v.connection));
  const pin = h("button", { id: "keep-open", class: "icon", "aria-label": t("keepOpen"), title: t("keepOpen"),
    "aria-pressed": keepOpen ? "true" : "false", onclick: () => {
      keepOpen = !keepOpen;
      pin.setAttribute("aria-pressed", keepOpen ? "true" : "false");
      tellKeepOpen();
    } }, "📌");
  show(
    accountTabs(),
    h("header", {}, avatar(me.name, me.state, me.avatar),
      h("h1", { id: "me" }, me.name, h("span", { class: "sub" }, me.signature || me.login)),
      full ? null : pin,
      h("button", { id: "refresh", class: "icon", "aria-label": t("refresh"), title: t("refresh"), onclick: async () => { state.view = await call("widget.refresh", { widget: state.widget }); widgetView(); } }, "⟳")),
    search ? h("div", { class: "pad" }, search) : null,
    h("div", { class: "scroll" }, list),
    full
      ? h("div", { class: "bar" }, conn, h("span", { class: "grow" }),
        h("button", { id: "log-out", onclick: async () => {
          try { await call("widget.remove", { widget: state.widget }); } catch (e) { /* logged out here regardless */ }
          state.view = null; state.widget = null; state.query = "";
          if (searchField) searchField.value = "";
          loginView(false);
        } }, t("logOut")))
      : h("div", { class: "bar" }, conn, h("span", { class: "grow" }),
      h("button", { id: "repick", onclick: async () => {
        const contacts = await call("widget.contacts", { widget: state.widget });
        pickerView(contacts, v.max_pins, v.pins.map((p) => p.id));
      } }, t("pickAgain")),
      h("button", { id: "change-account", onclick: () => loginView(true) }, t("changeAccount"))));
}

// ---- Several accounts: one panel reaches each -------------------------------------------------
// The daemon's widgets (id, name, unread), kept current from the notifications of the other widgets.
let accounts = [];
// One `widget.list` at a time; news that arrives meanwhile asks for one more afterwards, so the last
// news is never lost.
let accountsPending = false;
let accountsAgain = false;
function refreshAccounts() {
  if (accountsPending) { accountsAgain = true; return; }
  accountsPending = true;
  const done = () => {
    accountsPending = false;
    if (accountsAgain) { accountsAgain = false; refreshAccounts(); }
  };
  call("widget.list").then((list) => {
    const key = (l) => JSON.stringify(l.map((a) => [a.id, a.name, a.unread]));
    const changed = key(accounts) !== key(list);
    accounts = list;
    if (changed && state.screen === "widget") widgetView();
    done();
  }).catch(done);
}
function accountTabs() {
  if (accounts.length < 2) return null;
  const tabs = h("nav", { class: "tabs", id: "accounts", role: "tablist", "aria-label": t("accounts") });
  for (const a of accounts) {
    const current = a.id === state.widget;
    // The account on screen counts from its own view, which its notifications keep current.
    const unread = current && state.view ? state.view.pins.reduce((n, c) => n + c.unread, 0) : a.unread;
    const tab = h("button", { role: "tab", "data-widget": a.id, "aria-selected": current ? "true" : "false",
      onclick: () => { if (!current) switchAccount(a); } },
      h("span", { class: "tab-name" }, a.name),
      unread > 0 ? h("span", { class: "count" }, countLabel(unread)) : null);
    tabs.append(tab);
  }
  return tabs;
}
async function switchAccount(a) {
  state.widget = a.id;
  state.chat = null;
  try {
    await loadWidget();
    widgetView();
    // The tray counts this panel as the chosen account's from now on (a second click closes it, a
    // notification of this account comes here).
    call("ui.opened", { widget: a.id, name: a.name }).catch(() => {});
  } catch (e) { show(h("div", { class: "pad error" }, errorText(e))); }
}

// ---- Unread details (claim 3) ----------------------------------------------------------------
async function detailsView(contact) {
  state.screen = "details";
  const msgs = await call("widget.unread", { widget: state.widget, contact: contact.id });
  const list = h("ul", { class: "list", id: "unread" });
  for (const m of msgs) {
    const row = h("li", { tabindex: "0", "data-message": m.id },
      h("div", { class: "who" }, h("div", { class: "sig" }, when(m.ts, true)), h("div", {}, linked(m.text))));
    activate(row, () => chatView(contact));
    list.append(row);
  }
  if (!msgs.length) list.append(h("li", { class: "empty" }, t("noUnread")));
  // A reply from here goes to the contact and opens the chat, where it shows with the conversation.
  // A short placeholder that fits the field; how the keys work is said on hover and to screen readers.
  const reply = h("textarea", { id: "reply", "aria-label": `${t("typeMessage")} (${t("typeHint")})`, placeholder: t("typeMessage"), title: t("typeHint") });
  async function send() {
    const body = reply.value.trim();
    if (!body) return;
    try {
      await call("widget.send", { widget: state.widget, contact: contact.id, text: body });
      reply.value = "";
      chatView(contact);
    } catch (e) { alert(errorText(e)); }
  }
  reply.addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); send(); } });
  show(h("header", {}, h("button", { onclick: widgetView, "aria-label": t("back") }, "←"), avatar(contact.name, contact.state, contact.avatar),
    h("h1", {}, t("unreadFrom", { name: contact.name }))), h("div", { class: "scroll" }, list),
    h("div", { class: "compose" }, reply, h("button", { class: "primary", id: "reply-send", onclick: send }, t("send"))));
  // They have been seen: the count goes (up to the newest shown, so one arriving now stays unread).
  const newest = Math.max(0, ...msgs.map((m) => m.id || 0));
  if (newest > 0) call("widget.mark_read", { widget: state.widget, contact: contact.id, up_to: newest }).catch(() => {});
}

// ---- Chat (Fig. 5) ---------------------------------------------------------------------------
async function chatView(contact) {
  state.screen = "chat";
  state.chatWith = contact.id;
  const me = state.view.account;
  const box = h("div", { class: "msgs", id: "messages", role: "log" });
  const scroller = h("div", { class: "scroll" }, box);
  const text = h("textarea", { id: "text", "aria-label": `${t("typeMessage")} (${t("typeHint")})`, placeholder: t("typeMessage"), title: t("typeHint"), autofocus: true });
  const chat = { contact, box, scroller, oldest: null, oldestTs: null, more: true, loading: false, nodes: new Map(),
    calls: { pending: [], before: null, oldestTs: null, more: true } };
  state.chat = chat;
  async function send() {
    const body = text.value.trim();
    if (!body) return;
    text.value = "";
    try {
      const m = await call("widget.send", { widget: state.widget, contact: contact.id, text: body });
      addMessage(m, false);
    } catch (e) { text.value = body; alert(errorText(e)); }
  }
  text.addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); send(); } });
  scroller.addEventListener("scroll", () => { if (scroller.scrollTop < 40) loadOlder(); });
  show(
    h("header", {}, h("button", { id: "back", onclick: () => { state.chat = null; widgetView(); }, "aria-label": t("back") }, "←"),
      avatar(contact.name, contact.state, contact.avatar), h("h1", { id: "peer" }, contact.name, h("span", { class: "sub" }, t(contact.state))),
      h("button", { class: "icon", id: "chat-voice", "aria-label": t("voiceCall"), title: t("voiceCall"), onclick: () => startCall(contact, false) }, "📞"),
      h("button", { class: "icon", id: "chat-video", "aria-label": t("videoCall"), title: t("videoCall"), onclick: () => startCall(contact, true) }, "🎥"),
      avatar(me.name, me.state, me.avatar)),
    scroller,
    h("div", { class: "compose" }, text, h("button", { class: "primary", id: "send", onclick: send }, t("send"))));
  await loadOlder();
  scroller.scrollTop = scroller.scrollHeight;
  markRead();
}
async function loadOlder() {
  const chat = state.chat;
  if (!chat || chat.loading || !chat.more) return;
  chat.loading = true;
  const page = await call("widget.history", { widget: state.widget, contact: chat.contact.id, before: chat.oldest, limit: 30 });
  chat.more = page.more;
  const before = chat.scroller.scrollHeight;
  for (const m of page.messages) addMessage(m, true);
  await placeCalls(chat);
  separateDays(chat.box);
  chat.scroller.scrollTop += chat.scroller.scrollHeight - before;
  if (!chat.box.children.length) chat.box.append(h("div", { class: "empty", id: "no-messages" }, t("noMessages")));
  chat.loading = false;
}
function addMessage(m, older) {
  const chat = state.chat;
  if (!chat) return;
  document.getElementById("no-messages")?.remove();
  const key = m.client_id || "s" + m.id;
  const mine = m.from === state.view.account.id;
  const meta = h("span", { class: "meta" }, when(m.ts) + (mine && t(m.state) ? " · " + t(m.state) : ""));
  const el = h("div", { class: "msg" + (mine ? " mine" : ""), "data-message": m.id, "data-state": m.state, "data-ts": m.ts }, linked(m.text), meta);
  const existing = chat.nodes.get(key) || chat.nodes.get("s" + m.id);
  if (existing) { existing.replaceWith(el); } else if (older) { chat.box.prepend(el); } else { chat.box.append(el); }
  chat.nodes.set(key, el);
  if (m.id && m.id > 0) chat.nodes.set("s" + m.id, el);
  if (m.id && (chat.oldest == null || m.id < chat.oldest)) chat.oldest = m.id;
  if (m.ts && (chat.oldestTs == null || m.ts < chat.oldestTs)) chat.oldestTs = m.ts;
  if (!older) {
    separateDays(chat.box);
    chat.scroller.scrollTop = chat.scroller.scrollHeight;
  }
}
// The calls with the contact, in the conversation where they happened, from the server's call history
// (`call.history`). The two histories are paged apart: calls are fetched until they reach back as far
// as the messages shown, and a call older than those waits until older messages are loaded.
async function placeCalls(chat) {
  const calls = chat.calls;
  const inRange = (ts) => !chat.more || (chat.oldestTs != null && ts >= chat.oldestTs);
  while (calls.more && (calls.oldestTs == null || inRange(calls.oldestTs))) {
    const page = await call("call.history", { widget: state.widget, contact: chat.contact.id, before: calls.before, limit: 50 }).catch(() => null);
    if (!page || state.chat !== chat) { calls.more = false; break; }
    calls.pending.push(...page.calls);
    calls.more = page.more;
    if (page.calls.length) {
      const last = page.calls[page.calls.length - 1];
      calls.before = last.id;
      calls.oldestTs = last.ts;
    } else calls.more = false;
  }
  const now = calls.pending.filter((r) => inRange(r.ts));
  calls.pending = calls.pending.filter((r) => !inRange(r.ts));
  for (const r of now) addCallRecord(chat, r);
}
// The newest calls again (a call just ended while the chat is open): those not shown yet are added.
async function newCalls(chat) {
  const page = await call("call.history", { widget: state.widget, contact: chat.contact.id, limit: 20 }).catch(() => null);
  if (!page || state.chat !== chat) return;
  for (const r of page.calls) addCallRecord(chat, r);
  separateDays(chat.box);
  chat.scroller.scrollTop = chat.scroller.scrollHeight;
}
function callRecordWords(r) {
  const incoming = r.caller !== state.view.account.id;
  const kind = r.video ? "video" : "voice";
  if (r.duration_ms != null) return ["answered", `${t((incoming ? "rec_in_" : "rec_out_") + kind)} · ${duration(r.duration_ms)}`];
  if (incoming) return r.reason === "declined" ? ["declined", t("rec_declined_" + kind)] : ["missed", t("rec_missed_" + kind)];
  return ["unanswered", `${t("rec_out_" + kind)} · ${t("rec_end")[r.reason] || t("rec_end").other}`];
}
function addCallRecord(chat, r) {
  if (chat.nodes.has("c" + r.id)) return;
  document.getElementById("no-messages")?.remove();
  const [kind, words] = callRecordWords(r);
  // A call in the history is also the way to call back, the same kind of call.
  const el = h("button", { class: "callrec " + kind, "data-call": r.id, "data-kind": kind, "data-ts": r.ts,
    title: t("callBack"), "aria-label": `${words}, ${when(r.ts, true)}. ${t("callBack")}`, onclick: () => startCall(chat.contact, r.video) },
  `${r.video ? "🎥" : "📞"} ${words}`, h("span", { class: "meta" }, when(r.ts)));
  const after = [...chat.box.children].find((c) => c.dataset.ts && Number(c.dataset.ts) > r.ts);
  if (after) after.before(el); else chat.box.append(el);
  chat.nodes.set("c" + r.id, el);
}
function markRead() {
  if (state.chat) call("widget.mark_read", { widget: state.widget, contact: state.chat.contact.id }).catch(() => {});
}

// ---- Calls (claim 4, Fig. 6) -----------------------------------------------------------------
// One call at a time. The call view is the same whichever engine carries the media: the page's own
// WebRTC (call.js) where the webview has RTCPeerConnection (WebView2, WKWebView), else the native
// engine in the panel's process (`ui.media`; WebKitGTK), whose pictures the page fetches from
// call/frame. Signals go between the engine and the daemon (`call.signal`) unchanged either way.
let activeCall = null;
// A call accepted in its OS notification before this page heard it ring.
let answerWhenRinging = null;
const webEngine = typeof RTCPeerConnection === "function";
function callWords(c) {
  if (c.phase === "ended") return t("end")[c.reason] ? t("end")[c.reason].replace("{name}", c.contact.name) : t("call_ended");
  if (c.phase === "incoming") return `${t("call_incoming")} · ${t(c.video ? "call_incoming_video" : "call_incoming_voice")}`;
  // A party's link to the server dropped: the call waits for it, whatever the media does meanwhile.
  if (c.away) return t("call_reconnecting");
  return t("call_" + c.phase);
}
function contactById(id) {
  return (state.view && state.view.pins.find((p) => p.id === id)) || { id, name: String(id), state: "online" };
}
async function startCall(contact, video) {
  if (activeCall && activeCall.phase !== "ended") return callView();
  try {
    const placed = await call("call.start", { widget: state.widget, contact: contact.id, video });
    const c = { id: placed.call, contact, video, outgoing: true, phase: "calling", pending: [] };
    activeCall = c;
    callView();
    // The media starts while the call rings (the camera, the engine's libraries, candidates): once
    // the callee accepts, only the offer is left to make.
    c.ready = startEngine(c).catch((e) => { c.error = errorText(e); hangUp(true); });
  } catch (e) {
    // Refused as unavailable while this widget's own link is down: say that, not that the contact is.
    const ownLink = e && e.code === "call.unavailable" && state.view && state.view.connection !== "online";
    alert(ownLink ? t("callOffline") : errorText(e));
  }
}
function incomingCall(p) {
  if (activeCall && activeCall.phase !== "ended") return;
  activeCall = { id: p.call, contact: contactById(p.contact), video: p.video, outgoing: false, phase: "incoming", pending: [] };
  callView();
  if (answerWhenRinging === p.call) {
    answerWhenRinging = null;
    return acceptCall();
  }
  // The engine's libraries load while it rings (no camera or microphone is opened before accepting).
  if (!webEngine) call("ui.media", { op: "warm" }).catch(() => {});
}
async function acceptCall() {
  const c = activeCall;
  if (!c || c.phase !== "incoming") return;
  setPhase(c, "connecting");
  try {
    await call("call.accept", { widget: state.widget, call: c.id });
  } catch (e) {
    // It stopped ringing meanwhile (the caller gave up, another device answered).
    return endCall(c, e && e.code === "call.not_found" ? "cancelled" : "failed", e && e.code === "call.not_found" ? null : errorText(e));
  }
  try { await startEngine(c); } catch (e) { c.error = errorText(e); hangUp(true); }
}
function declineCall() {
  const c = activeCall;
  if (!c) return;
  call("call.decline", { widget: state.widget, call: c.id }).catch(() => {});
  closeCall(c);
  chatView(c.contact);
}
function hangUp(failed) {
  const c = activeCall;
  if (!c || c.phase === "ended") return;
  call("call.hangup", { widget: state.widget, call: c.id, failed: !!failed }).catch(() => {});
  endCall(c, failed ? "failed" : "hangup");
}
// The engine for this call: the media starts; the caller makes the offer once the call is accepted
// (`c.engine.offer()`), the callee answers the offer when it comes.
async function startEngine(c) {
  const signal = (sig) => call("call.signal", { widget: state.widget, call: c.id, signal: sig }).catch(() => {});
  // STUN and TURN from the server, so that calls cross NATs; without them a call still connects
  // where the two computers reach each other directly.
  const ice = await call("call.ice", { widget: state.widget }).catch(() => ({ ice_servers: [] }));
  if (webEngine) {
    let stream;
    try {
      stream = await localMedia(c);
    } catch (e) {
      // The person (or the system's privacy settings) refused the camera and microphone: the peer is
      // told the call failed.
      c.error = errorText({ code: "ui.no_devices" });
      return hangUp(true);
    }
    if (activeCall !== c) { for (const t_ of stream.getTracks()) t_.stop(); return; }
    c.engine = new PinchatCall({
      iceServers: ice.ice_servers, video: c.video, localStream: stream, onSignal: signal,
      onState: (s) => onIce(c, s),
      onRemoteStream: (remote) => { const v = document.getElementById("remote-video"); if (v) v.srcObject = remote; c.remote = remote; },
    });
  } else {
    window.pinchat.media = (ev) => onMedia(c, ev, signal);
    await call("ui.media", { op: "start", video: c.video, offer: false, ice_servers: ice.ice_servers });
    if (activeCall !== c) { call("ui.media", { op: "stop" }).catch(() => {}); return; }
    c.engine = {
      offer: () => call("ui.media", { op: "offer" }),
      remote: (sig) => call("ui.media", { op: "remote", signal: sig }),
      setMuted: (muted) => call("ui.media", { op: "mute", muted }).catch(() => {}),
      setCamera: (on) => call("ui.media", { op: "camera", on }).catch(() => {}),
      close: () => call("ui.media", { op: "stop" }).catch(() => {}),
    };
    pumpFrames(c);
  }
  for (const sig of c.pending.splice(0)) await remoteSignal(c, sig);
}
// The camera and microphone for a call in the page's own WebRTC. What the computer lacks is left out
// (the call goes on without it, and the view says so, as the native engine's `missing` event does);
// a refusal is not worked around.
async function localMedia(c) {
  const tries = c.video ? [[true, true], [true, false], [false, true]] : [[true, false]];
  for (const [audio, video] of tries) {
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio, video });
      if (!audio || (c.video && !video)) c.missing = { microphone: !audio, camera: c.video && !video };
      return stream;
    } catch (e) {
      if (e && e.name === "NotAllowedError") throw e;
    }
  }
  c.missing = { microphone: true, camera: c.video };
  return new MediaStream();
}
async function remoteSignal(c, sig) {
  if (!c.engine) { c.pending.push(sig); return; }
  try { await c.engine.remote(sig); } catch (e) {
    // The peer sent something the engine cannot use (a malformed description): the call cannot go on.
    c.error = errorText(e);
    hangUp(true);
  }
}
function onMedia(c, ev, signal) {
  if (activeCall !== c) return;
  if (ev.signal) signal(ev.signal);
  else if (ev.ice) onIce(c, ev.ice);
  else if (ev.first_frame) setPhase(c, "connected");
  else if (ev.failed) { c.error = ev.failed; hangUp(true); }
  else if (ev.missing) { c.missing = ev.missing; if (state.screen === "call") callView(); }
}
function onIce(c, s) {
  if (activeCall !== c || c.phase === "ended") return;
  if (s === "connected" || s === "completed") setPhase(c, "connected");
  else if (s === "disconnected") setPhase(c, "reconnecting");
  else if (s === "failed") hangUp(true);
}
// The native engine's pictures: the next one fetched when the last has been drawn.
function pumpFrames(c) {
  // A redrawn call view starts the loop again for its new picture: the older loop stops.
  const mine = c.pump = (c.pump || 0) + 1;
  let n = 0;
  const next = () => {
    const img = document.getElementById("remote-video");
    if (activeCall !== c || c.pump !== mine || c.phase === "ended" || !img) return;
    img.onload = () => {
      img.hidden = false;
      c.frames = (c.frames || 0) + 1;
      if (!c.firstFrameAt) c.firstFrameAt = performance.now();
      setTimeout(next, 60);
    };
    img.onerror = () => setTimeout(next, 150);
    img.src = "call/frame?n=" + n++;
  };
  next();
}
function setPhase(c, phase) {
  if (c.phase === phase || c.phase === "ended") return;
  c.phase = phase;
  if (phase === "connected" && !c.since) c.since = Date.now();
  if (activeCall === c && state.screen === "call") callView();
}
function closeCall(c) {
  if (c.engine) { try { c.engine.close(); } catch (e) { /* already closed */ } }
  c.engine = null;
  if (c.timer) clearInterval(c.timer);
  if (activeCall === c) activeCall = null;
}
function endCall(c, reason, error) {
  if (c.phase === "ended") return;
  if (c.engine) { try { c.engine.close(); } catch (e) { /* already closed */ } }
  c.engine = null;
  c.phase = "ended";
  c.reason = reason;
  if (error) c.error = error;
  if (c.timer) clearInterval(c.timer);
  if (activeCall === c && state.screen === "call") callView();
}
function duration(ms) {
  const s = Math.floor(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}
function callView() {
  const c = activeCall;
  if (!c) return widgetView();
  state.screen = "call";
  const picture = c.video && c.phase !== "ended" && c.phase !== "incoming"
    ? (webEngine ? h("video", { id: "remote-video", autoplay: true, playsinline: true }) : h("img", { id: "remote-video", alt: "", hidden: true }))
    : null;
  if (picture && webEngine && c.remote) picture.srcObject = c.remote;
  const clock = h("div", { class: "call-time", id: "call-duration" }, c.since ? duration(Date.now() - c.since) : "");
  if (c.timer) clearInterval(c.timer);
  if (c.since && c.phase !== "ended") {
    c.timer = setInterval(() => { clock.textContent = duration(Date.now() - c.since); }, 1000);
  }
  let buttons;
  if (c.phase === "incoming") {
    buttons = [h("button", { id: "call-decline", class: "danger", onclick: declineCall }, t("decline")),
      h("button", { id: "call-accept", class: "primary", onclick: acceptCall }, t("accept"))];
  } else if (c.phase === "ended") {
    // Back to the conversation, where the call now shows in the history.
    buttons = [h("button", { id: "call-close", class: "primary", onclick: () => { closeCall(c); chatView(c.contact); } }, t("back"))];
  } else {
    buttons = [
      h("button", { id: "call-mute", "aria-pressed": c.muted ? "true" : "false",
        onclick: () => { c.muted = !c.muted; if (c.engine) c.engine.setMuted(c.muted); callView(); } }, t(c.muted ? "unmute" : "mute")),
      c.video ? h("button", { id: "call-camera", "aria-pressed": c.cameraOff ? "true" : "false",
        onclick: () => { c.cameraOff = !c.cameraOff; if (c.engine) c.engine.setCamera(!c.cameraOff); callView(); } }, t(c.cameraOff ? "cameraOn" : "cameraOff")) : null,
      h("button", { id: "call-hangup", class: "danger", onclick: () => hangUp(false) }, t("hangUp")),
    ];
  }
  show(
    h("header", {}, avatar(c.contact.name, c.contact.state, c.contact.avatar),
      h("h1", { id: "call-peer" }, c.contact.name,
        h("span", { class: "sub", id: "call-state", "data-phase": c.phase, "data-reason": c.reason || "", role: "status" }, callWords(c)))),
    h("div", { class: "call-stage" + (picture ? "" : " voice") },
      picture || h("div", { class: "call-avatar" }, avatar(c.contact.name, null, c.contact.avatar)),
      clock,
      c.missing && c.phase !== "ended" ? h("div", { class: "note", id: "call-missing", role: "status" },
        [c.missing.microphone ? t("noMicrophone") : null, c.missing.camera ? t("noCamera") : null]
          .filter(Boolean).map((s) => s.replace("{name}", c.contact.name)).join(" ")) : null,
      c.away && c.phase !== "ended" ? h("div", { class: "note", id: "call-away", role: "status" },
        t(c.away === "away" ? "awayOwn" : "awayPeer").replace("{name}", c.contact.name)) : null,
      c.error ? h("div", { class: "error", id: "call-error", role: "alert" }, c.error) : null),
    h("div", { class: "bar call-bar" }, h("span", { class: "grow" }), buttons, h("span", { class: "grow" })));
  if (picture && !webEngine && c.engine) pumpFrames(c);
}
// Text or video: the choice on a pinned contact (Fig. 6).
function callButtons(contact) {
  const stop = (fn) => (e) => { e.stopPropagation(); fn(); };
  return h("span", { class: "choose" },
    h("button", { class: "icon", "data-text": contact.id, "aria-label": `${t("textChat")}: ${contact.name}`, title: t("textChat"), onclick: stop(() => chatView(contact)) }, "💬"),
    h("button", { class: "icon", "data-video": contact.id, "aria-label": `${t("videoCall")}: ${contact.name}`, title: t("videoCall"), onclick: stop(() => startCall(contact, true)) }, "🎥"));
}

// ---- Re-authentication -----------------------------------------------------------------------
function reauthView() {
  state.screen = "reauth";
  const err = h("div", { class: "error", role: "alert" });
  const password = h("input", { type: "password", id: "password", autofocus: true, autocomplete: "current-password" });
  show(h("header", {}, h("h1", {}, t("reauthTitle"), h("span", { class: "sub" }, state.view.account.login))),
    h("form", { class: "pad", onsubmit: async (e) => {
      e.preventDefault();
      try {
        state.view = await call("widget.reauth", { widget: state.widget, password: password.value });
        password.value = "";
        widgetView();
      } catch (e2) { err.textContent = errorText(e2); }
    } }, h("p", {}, t("reauthText")), h("label", { for: "password" }, t("password")), password, err,
      h("button", { class: "primary", type: "submit", id: "reauth" }, t("logIn"))));
}

// ---- Live updates ----------------------------------------------------------------------------
function onEvent(n) {
  const p = n.params || {};
  const other = (typeof p.widget === "string" && p.widget !== state.widget) ||
    (p.widget && typeof p.widget === "object" && p.widget.id !== state.widget);
  // Another account's news changes at most its tab.
  if (["unread.changed", "widget.changed", "widget.removed"].includes(n.method) && other) {
    refreshAccounts();
  }
  if (p.widget && typeof p.widget === "string" && p.widget !== state.widget) return;
  switch (n.method) {
    case "widget.changed":
      if (p.widget.id !== state.widget) return;
      state.view = p.widget;
      if (state.screen === "widget" || (state.screen === "reauth" && state.view.connection !== "auth_required")) widgetView();
      else if (state.view.connection === "auth_required" && state.screen !== "login") reauthView();
      break;
    case "widget.contact_changed": {
      const c = state.view && state.view.pins.find((x) => x.id === p.contact);
      if (!c) return;
      for (const f of p.fields) Object.assign(c, f);
      if (state.screen === "widget") widgetView();
      // The contact read my messages up to peer_read: show them as read.
      if (state.chat && state.chat.contact.id === p.contact && c.peer_read) {
        for (const el of state.chat.box.querySelectorAll(".msg.mine")) {
          if (Number(el.dataset.message) <= c.peer_read && el.dataset.state === "sent") {
            el.dataset.state = "read";
            const meta = el.querySelector(".meta");
            meta.textContent = meta.textContent.replace(" · " + t("sent"), " · " + t("read"));
          }
        }
      }
      break;
    }
    case "unread.changed": {
      const c = state.view && state.view.pins.find((x) => x.id === p.contact);
      if (!c) return;
      c.unread = p.unread;
      if (state.screen === "widget") widgetView();
      break;
    }
    case "connection.changed":
      if (!state.view) return;
      state.view.connection = p.connection;
      state.view.via = p.via;
      state.view.stale = p.stale;
      if (p.connection === "auth_required") { if (state.screen !== "login") reauthView(); }
      else if (state.screen === "widget" || state.screen === "reauth") widgetView();
      break;
    case "auth.required":
      if (!state.view) return;
      state.view.connection = "auth_required";
      if (state.screen !== "login") reauthView();
      break;
    case "message.received":
      if (state.chat && p.message.from === state.chat.contact.id) { addMessage(p.message, false); markRead(); }
      break;
    case "message.delivery":
      if (state.chat && p.message.to === state.chat.contact.id) addMessage(p.message, false);
      break;
    case "widget.removed":
      call("ui.close", {});
      break;
    case "call.incoming":
      incomingCall(p);
      break;
    case "call.changed":
      if (!activeCall || activeCall.id !== p.call) return;
      if (p.state === "peer_away" || p.state === "away" || p.state === "back") {
        activeCall.away = p.state === "back" ? null : p.state;
        if (state.screen === "call") callView();
      } else if (!activeCall.outgoing) {
        // Another panel or gadget of this account answered: it rings here no more.
        if (p.state === "accepted" && activeCall.phase === "incoming") endCall(activeCall, "answered_elsewhere");
      } else if (p.state === "ringing") setPhase(activeCall, "ringing");
      else if (p.state === "accepted") {
        const c = activeCall;
        c.acceptedAt = performance.now();
        setPhase(c, "connecting");
        Promise.resolve(c.ready)
          .then(() => { if (c.engine && activeCall === c) return c.engine.offer(); })
          .catch((e) => { c.error = errorText(e); hangUp(true); });
      }
      break;
    case "call.signal":
      if (activeCall && activeCall.id === p.call) remoteSignal(activeCall, p.signal);
      break;
    case "call.ended":
      // Declined elsewhere (its OS notification, another panel): it simply stops ringing here.
      if (activeCall && activeCall.id === p.call && !activeCall.outgoing && p.reason === "declined") {
        const c = activeCall;
        closeCall(c);
        if (state.screen === "call") chatView(c.contact);
      } else if (activeCall && activeCall.id === p.call) endCall(activeCall, p.reason);
      if (state.screen === "chat" && state.chat && state.chat.contact.id === p.contact) newCalls(state.chat);
      break;
  }
}

// ---- Start -----------------------------------------------------------------------------------
(async () => {
  refreshAccounts();
  if (params.get("view") === "widget" && state.widget) {
    try {
      await loadWidget();
      widgetView();
      if (params.get("chat")) await window.pinchat.openChat(Number(params.get("chat")));
      // Opened by the tray for an incoming call (`ring`), or opened while one rings: ring here —
      // if it still rings (the daemon's view says; the one the tray named may be over by now).
      const ring = /^(\d+):(\d+):(video|voice)(:answer)?$/.exec(params.get("ring") || "");
      if (ring && ring[4]) window.pinchat.answer(Number(ring[1]));
      const ringing = state.view.ringing || [];
      const now = (ring && ringing.find((r) => r.call === Number(ring[1]))) || ringing[0];
      if (now) incomingCall(now);
    } catch (e) { show(h("div", { class: "pad error" }, errorText(e))); }
  } else {
    loginView(false);
  }
})();
