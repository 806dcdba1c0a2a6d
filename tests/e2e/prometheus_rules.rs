//! The Prometheus rules shipped with the example runbooks, checked and
//! unit-tested by Prometheus's own `promtool`: the P99 rule must page on a
//! real spike and stay quiet on a large ratio with a small difference.

use std::process::Command;

use quench_tests::{repo_root, require};

#[test]
fn example_rules_pass_promtool() {
    let promtool = require("promtool", "prometheus");
    let dir = repo_root().join("runbooks/prometheus");
    for args in [
        &["check", "rules", "rules.yml"][..],
        &["test", "rules", "rules_test.yml"][..],
    ] {
        let out = Command::new(&promtool)
            .current_dir(&dir)
            .args(args)
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
