//! The XMPP half of the traffic benchmark: runs `bench/xmpp/traffic.py` (slixmpp against a private
//! Prosody) on the same schedule and reads its figures.

use crate::schedule::Schedule;
use crate::traffic::Measured;

/// Runs the XMPP driver on the same schedule and reads its figures.
pub fn run(schedule: &Schedule, scale: f64) -> anyhow::Result<Vec<Measured>> {
    let dir = tempfile::tempdir()?;
    let schedule_path = dir.path().join("schedule.json");
    let out_path = dir.path().join("xmpp.json");
    std::fs::write(&schedule_path, serde_json::to_string(schedule)?)?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("xmpp/traffic.py");
    let status = std::process::Command::new("python3")
        .arg(&script)
        .arg("--schedule")
        .arg(&schedule_path)
        .arg("--scale")
        .arg(scale.to_string())
        .arg("--out")
        .arg(&out_path)
        .status()?;
    anyhow::ensure!(status.success(), "the XMPP driver failed ({status})");
    let text = std::fs::read_to_string(&out_path)?;
    #[derive(serde::Deserialize)]
    struct X {
        name: String,
        initial_bytes: u64,
        run_bytes: u64,
        presence_events: u64,
        presence_bytes: u64,
        messages: u64,
        delays_ms: Vec<f64>,
    }
    let xs: Vec<X> = serde_json::from_str(&text)?;
    Ok(xs
        .into_iter()
        .map(|x| Measured {
            name: x.name,
            initial_bytes: x.initial_bytes,
            run_bytes: x.run_bytes,
            window_minutes: schedule.window_secs / 60.0,
            presence_events: x.presence_events,
            presence_bytes: x.presence_bytes,
            messages: x.messages,
            delays_ms: x.delays_ms,
        })
        .collect())
}
