//! Tiny runs of the benchmarks, so that they keep working. They check that the figures exist and make
//! sense, never how fast anything was.

use pinchat_bench::schedule::Schedule;
use pinchat_bench::{traffic, xmpp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_benchmark_smoke() {
    // 20 contacts, 2 pinned, 30 workload seconds compressed 10x.
    let schedule = Schedule::generate(20, 2, 30.0, 10.0, 10.0, 7);
    assert!(schedule.changes() > schedule.pinned_changes());
    let a = traffic::run(&schedule, false, 10.0).await.unwrap();
    let b = traffic::run(&schedule, true, 10.0).await.unwrap();
    assert_eq!(a.messages as usize, schedule.messages());
    assert!(a.presence_events as usize <= schedule.pinned_changes());
    assert!(
        b.presence_events > a.presence_events,
        "the full roster sees more changes than the pins"
    );
    assert!(a.bytes_per_presence() <= 40.0, "{}", a.bytes_per_presence());
    // The XMPP half runs when Prosody and slixmpp are there (CI installs them).
    // (Looked up on PATH: `prosody --version` starts a server.)
    let prosody = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("prosody").is_file()));
    let have_xmpp = prosody
        && std::process::Command::new("python3")
            .args(["-c", "import slixmpp"])
            .status()
            .is_ok_and(|s| s.success());
    if have_xmpp {
        let x = xmpp::run(&schedule, 10.0).unwrap();
        assert_eq!(x.len(), 2);
        assert!(x[0].initial_bytes > a.initial_bytes);
        assert_eq!(x[0].messages as usize, schedule.messages());
    } else {
        eprintln!("traffic smoke: Prosody or slixmpp missing; the XMPP half was not run");
    }
}
