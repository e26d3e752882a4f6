//! The demo world: a user with 30 contacts, names and signatures in English and Chinese, generated
//! avatars — and, while the demo server runs, contacts that change state and write now and then.

use crate::auth;
use crate::store::{ProfileChange, Store, StoreError};
use crate::util::now_ms;
use pinchat_proto::{AccountId, Presence};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The demo user's login and password.
pub const DEMO_LOGIN: &str = "demo";
/// The password of every demo account.
pub const DEMO_PASSWORD: &str = "demo";

/// (login, name, signature, description)
const CONTACTS: [(&str, &str, &str, &str); 30] = [
    (
        "alice",
        "Alice Chen",
        "Coffee first, code second.",
        "Backend engineer in Shanghai.",
    ),
    ("wangwei", "王伟", "今天也要加油！", "产品经理，喜欢跑步。"),
    (
        "bob",
        "Bob Martin",
        "Out hiking until Monday.",
        "Designer, amateur photographer.",
    ),
    ("lina", "李娜", "在开会，稍后回复", "市场部"),
    (
        "carol",
        "Carol Smith",
        "Ask me about Rust.",
        "Systems programmer.",
    ),
    ("zhangmin", "张敏", "读书中📚", "大学老师，研究语言学。"),
    ("david", "David Kim", "On call this week.", "Site reliability."),
    ("liuyang", "刘洋", "周末去爬山", "摄影爱好者"),
    (
        "emma",
        "Emma Wilson",
        "Learning Mandarin — 你好!",
        "Teacher in Beijing.",
    ),
    ("chenjing", "陈静", "静以修身", "财务"),
    ("frank", "Frank Müller", "Build, measure, learn.", "Founder."),
    ("yangfan", "杨帆", "一帆风顺", "销售经理"),
    ("grace", "Grace Park", "Deadline Friday.", "Project manager."),
    ("zhaolei", "赵磊", "代码写完了吗？", "前端工程师"),
    (
        "henry",
        "Henry Adams",
        "Gone fishing 🎣",
        "Retired, writes about history.",
    ),
    ("huangli", "黄丽", "早睡早起", "医生"),
    ("isabel", "Isabel García", "Hola / Hello / 你好", "Translator."),
    ("zhouting", "周婷", "喝茶的时间到了🍵", "设计师"),
    ("jack", "Jack Brown", "Tests green, ship it.", "QA lead."),
    ("wugang", "吴刚", "在路上", "司机"),
    ("kate", "Kate O'Neil", "Reading on the train.", "Editor."),
    ("xuming", "徐明", "明天会更好", "学生"),
    ("leo", "Leo Rossi", "Pizza Friday!", "Chef."),
    ("sunyue", "孙悦", "音乐是生活", "钢琴老师"),
    ("mia", "Mia Johnson", "Working remotely.", "Data analyst."),
    ("zhulin", "朱琳", "请勿打扰", "律师"),
    ("noah", "Noah Davis", "Back at 3pm.", "Accountant."),
    ("gaofeng", "高峰", "登高望远", "建筑师"),
    ("olivia", "Olivia Taylor", "Always curious.", "Researcher."),
    ("heyu", "何雨", "下雨天适合写代码", "后端工程师"),
];

/// What seeding did.
#[derive(Debug)]
pub struct Seeded {
    /// The demo user.
    pub demo: AccountId,
    /// Its contacts, in the order of the table above.
    pub contacts: Vec<AccountId>,
    /// `false` when the world already existed and was left alone.
    pub created: bool,
}

/// Creates the demo world unless it exists. Idempotent.
pub async fn seed(store: &dyn Store) -> Result<Seeded, StoreError> {
    if let Some(demo) = store.account_id(DEMO_LOGIN).await? {
        let mut contacts = vec![];
        for (login, ..) in CONTACTS {
            if let Some(id) = store.account_id(login).await? {
                contacts.push(id);
            }
        }
        return Ok(Seeded {
            demo,
            contacts,
            created: false,
        });
    }
    // One hash for every demo account: they share a published password anyway, and hashing 31 times
    // would only slow the demo's start.
    let hash = tokio::task::spawn_blocking(|| auth::hash_password(DEMO_PASSWORD))
        .await
        .map_err(|e| StoreError::Db(e.to_string()))?;
    let demo = create(
        store,
        DEMO_LOGIN,
        &hash,
        "Demo User · 演示用户",
        "Trying out pinchat.",
        "",
    )
    .await?;
    let mut contacts = vec![];
    for (i, (login, name, signature, description)) in CONTACTS.iter().enumerate() {
        let id = create(store, login, &hash, name, signature, description).await?;
        store.link(demo, id).await?;
        // Some contacts know each other too, as in a real address book.
        if i >= 2 && i % 3 == 0 {
            store.link(id, contacts[i - 2]).await?;
        }
        let state = [
            Presence::Online,
            Presence::Busy,
            Presence::Idle,
            Presence::DoNotDisturb,
        ][i % 4];
        store.set_presence(id, Some(state), None).await?;
        contacts.push(id);
    }
    Ok(Seeded {
        demo,
        contacts,
        created: true,
    })
}

async fn create(
    store: &dyn Store,
    login: &str,
    hash: &str,
    name: &str,
    signature: &str,
    description: &str,
) -> Result<AccountId, StoreError> {
    let id = store.create_account(login, hash, name).await?;
    let png = identicon(login);
    let avatar = crate::http::avatar_hash(&png);
    store.put_avatar(&avatar, "image/png", png).await?;
    let change = ProfileChange {
        name: None,
        avatar: Some(Some(avatar)),
        signature: Some(signature.into()),
        description: Some(description.into()),
    };
    store.update_profile(id, change).await?;
    Ok(id)
}

/// A 5×5 mirrored identicon, 80×80 pixels, coloured from the seed's hash: a recognisable avatar without
/// shipping images.
pub fn identicon(seed: &str) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(seed.as_bytes());
    let fg = [h[0] / 2 + 64, h[1] / 2 + 64, h[2] / 2 + 64];
    let bg = [240u8, 240, 240];
    const CELL: usize = 14;
    const PAD: usize = 5;
    const SIZE: usize = 5 * CELL + 2 * PAD;
    let mut pixels = vec![0u8; SIZE * SIZE * 3];
    for y in 0..SIZE {
        for x in 0..SIZE {
            let on = if (PAD..SIZE - PAD).contains(&x) && (PAD..SIZE - PAD).contains(&y) {
                let (cx, cy) = ((x - PAD) / CELL, (y - PAD) / CELL);
                let col = if cx > 2 { 4 - cx } else { cx };
                h[3 + cy * 3 + col] & 1 == 1
            } else {
                false
            };
            pixels[(y * SIZE + x) * 3..][..3].copy_from_slice(if on { &fg } else { &bg });
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, SIZE as u32, SIZE as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .expect("writing a PNG header to memory cannot fail");
    writer
        .write_image_data(&pixels)
        .expect("writing PNG data to memory cannot fail");
    writer.finish().expect("finishing a PNG in memory cannot fail");
    out
}

/// When the demo contacts write: a newcomer sees a message within the demo's first quarter minute,
/// then about one a minute (more would bury them in notifications); every other tick a contact
/// changes state.
struct Schedule {
    next_message: Duration,
}

/// The first demo message, counted from the start.
const FIRST_MESSAGE: Duration = Duration::from_secs(10);
/// Between two demo messages.
const MESSAGE_EVERY: Duration = Duration::from_secs(60);

impl Schedule {
    fn new() -> Schedule {
        Schedule {
            next_message: FIRST_MESSAGE,
        }
    }

    /// Whether the tick at `elapsed` since the start brings a message (else a change of state).
    fn message_at(&mut self, elapsed: Duration) -> bool {
        if elapsed < self.next_message {
            return false;
        }
        self.next_message = elapsed + MESSAGE_EVERY;
        true
    }
}

/// Keeps the demo alive: every few seconds a contact changes state, and now and then one writes to the
/// demo user ([`Schedule`]). Runs until `stop`.
pub async fn animate(store: Arc<dyn Store>, world: Seeded, every: Duration, stop: CancellationToken) {
    let texts = [
        "Hi! Are you free for a quick call?",
        "晚上一起吃饭吗？",
        "I pushed the fix, can you take a look?",
        "文件已经发给你了",
        "Running 5 minutes late, sorry!",
        "周末愉快！",
    ];
    // The demo contacts have no client of their own; mark them connected so their states show.
    let all: Vec<(AccountId, bool)> = world.contacts.iter().map(|c| (*c, true)).collect();
    if let Err(e) = store.set_connected(all).await {
        tracing::warn!(error = %e, "demo: cannot mark contacts connected");
    }
    let mut tick = tokio::time::interval(every);
    let start = tick.tick().await;
    let mut schedule = Schedule::new();
    let mut n: u64 = now_ms() as u64;
    loop {
        let now = tokio::select! {
            _ = stop.cancelled() => return,
            now = tick.tick() => now,
        };
        // A small linear congruential generator is random enough to pick who does what.
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let who = world.contacts[(n >> 33) as usize % world.contacts.len()];
        let result = if schedule.message_at(now - start) {
            let text = texts[(n >> 40) as usize % texts.len()];
            store
                .send_message(who, world.demo, &format!("demo-{n:x}"), text, now_ms())
                .await
                .map(|_| ())
        } else {
            let state = Presence::ALL[1 + (n >> 45) as usize % 4];
            store.set_presence(who, Some(state), None).await
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "demo: cannot animate");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn the_demo_writes_within_its_first_quarter_minute_then_about_once_a_minute() {
        // `pinchat demo`'s default: a tick every 4 seconds.
        let mut schedule = super::Schedule::new();
        let messages: Vec<u64> = (1..=40)
            .map(|k| Duration::from_secs(4 * k))
            .filter(|&t| schedule.message_at(t))
            .map(|t| t.as_secs())
            .collect();
        assert_eq!(messages, [12, 72, 132]);
    }

    #[test]
    fn identicons_are_png_and_differ() {
        let a = super::identicon("alice");
        assert!(crate::http::sniff_image(&a) == Some("image/png"));
        assert_ne!(a, super::identicon("bob"));
        assert_eq!(a, super::identicon("alice"));
    }
}
