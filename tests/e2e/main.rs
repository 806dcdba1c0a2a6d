//! End-to-end tests: the real `quench` binary against real senders.
//! One test binary, one module per area (see STYLE.md, ripgrep's layout).

mod alertmanager;
mod argocd;
mod bad_input;
mod chaos;
mod cli;
mod console;
mod crash;
mod crash_resume;
mod executor;
mod gitops;
mod go_evidence;
mod ha;
mod k8s_evidence;
mod k8s_exec;
mod k8s_rbac;
mod k8s_remediation;
mod knowledge;
mod pprof;
mod prometheus_rules;
mod promql;
mod senders;
mod storm;
