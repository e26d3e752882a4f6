//! Short versions of the reliability runs (`bench/run reliability` runs the long ones; figures in
//! RELIABILITY.md): the real server and daemon processes SIGKILLed at random moments, or the link between
//! them broken in every way a network breaks, while messages flow both ways (including bursts typed while
//! the server is unreachable) and presence changes. Afterwards nothing acknowledged may be lost or
//! duplicated, and the widget must agree with the server.

use pinchat_bench::reliability::{Bins, Chaos, Plan, Report, run};

fn bins() -> Bins {
    Bins {
        server: pinchat_tests::server_binary().to_owned(),
        daemon: pinchat_tests::daemon_binary(),
    }
}

fn check(report: &Report) {
    eprintln!("{}", serde_json::to_string_pretty(report).unwrap());
    assert!(report.clean(), "lost, duplicated or different: {report:#?}");
    assert!(
        report.queued_by_daemon > 0 && report.stored_by_server > 0,
        "{report:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_daemon_kills_during_traffic_lose_and_duplicate_nothing() {
    let plan = Plan {
        chaos: Chaos::DaemonKills,
        cycles: 50,
        seed: 7,
        offline_every: 10,
        offline_burst: 80,
        max_gap_ms: 300,
        max_fault_ms: 0,
    };
    let report = run(&bins(), &plan).await.unwrap();
    check(&report);
    assert!(
        report.queued_offline >= 5 * 80,
        "bursts of 80 typed offline: {report:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_kills_during_bursts_lose_and_duplicate_nothing() {
    let plan = Plan {
        chaos: Chaos::ServerKills,
        cycles: 15,
        seed: 11,
        offline_every: 5,
        offline_burst: 80,
        max_gap_ms: 400,
        max_fault_ms: 0,
    };
    check(&run(&bins(), &plan).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_faults_leave_the_widget_equal_to_the_server() {
    let plan = Plan {
        chaos: Chaos::NetworkFaults,
        cycles: 20,
        seed: 3,
        offline_every: 7,
        offline_burst: 80,
        max_gap_ms: 300,
        max_fault_ms: 1500,
    };
    check(&run(&bins(), &plan).await.unwrap());
}
