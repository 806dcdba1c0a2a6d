//! The fault steps. `chaos.pod_kill` is native (pods deleted through the
//! Kubernetes client); the others create the matching Chaos Mesh custom
//! resource (NetworkChaos, StressChaos, IOChaos) as a dynamic object, which
//! the rollback deletes (finalizers handled).
//!
//! Targets always come from the experiment's blast radius, never from the
//! step: the step says what to do, the blast radius where and how much.

use serde_json::{Map, Value, json};

use crate::model::{BlastRadius, Mode};

/// Why a fault's parameters do not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    /// A parameter the fault does not take.
    #[error("{fault}: unknown parameter `{key}`, expected one of {expected}")]
    UnknownParam {
        /// The fault.
        fault: &'static str,
        /// What was written.
        key: String,
        /// What it takes.
        expected: String,
    },
    /// A required parameter is missing.
    #[error("{fault}: `{param}` is required")]
    Missing {
        /// The fault.
        fault: &'static str,
        /// The parameter.
        param: &'static str,
    },
    /// A value that does not fit (an interface name, a netem setting, a
    /// selector).
    #[error("{0}")]
    Invalid(String),
    /// A native fault has no Chaos Mesh object.
    #[error("{0} is native: it has no Chaos Mesh object")]
    Native(&'static str),
}

/// A fault type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Deletes pods.
    PodKill,
    /// NetworkChaos `delay`.
    NetworkDelay,
    /// NetworkChaos `loss`.
    NetworkLoss,
    /// StressChaos with a CPU stressor.
    CpuStress,
    /// StressChaos with a memory stressor.
    MemoryStress,
    /// IOChaos `latency`.
    IoLatency,
    /// `tc qdisc ... netem` in each target pod, through exec: for clusters
    /// without Chaos Mesh (the image needs `tc`, the container NET_ADMIN).
    Netem,
}

const ALL: &[(Fault, &str)] = &[
    (Fault::PodKill, "chaos.pod_kill"),
    (Fault::NetworkDelay, "chaos.network_delay"),
    (Fault::NetworkLoss, "chaos.network_loss"),
    (Fault::CpuStress, "chaos.cpu_stress"),
    (Fault::MemoryStress, "chaos.memory_stress"),
    (Fault::IoLatency, "chaos.io_latency"),
    (Fault::Netem, "chaos.netem"),
];

/// Each fault's parameters: (name, required).
fn params(f: Fault) -> &'static [(&'static str, bool)] {
    match f {
        Fault::PodKill => &[("grace_seconds", false)],
        Fault::NetworkDelay => &[("latency", true), ("jitter", false)],
        Fault::NetworkLoss => &[("loss", true)],
        Fault::CpuStress => &[("workers", true), ("load", false)],
        Fault::MemoryStress => &[("workers", true), ("size", true)],
        Fault::IoLatency => &[
            ("delay", true),
            ("volume_path", true),
            ("path", false),
            ("percent", false),
        ],
        Fault::Netem => &[
            ("delay", false),
            ("loss", false),
            ("interface", false),
            ("container", false),
        ],
    }
}

impl Fault {
    /// The fault a `uses:` names.
    pub fn from_name(name: &str) -> Option<Fault> {
        ALL.iter().find(|(_, n)| *n == name).map(|(f, _)| *f)
    }

    /// Its `uses:` name.
    pub fn name(self) -> &'static str {
        ALL.iter()
            .find(|(f, _)| *f == self)
            .map(|(_, n)| *n)
            .unwrap_or("")
    }

    /// Every fault name, for messages.
    pub fn names() -> String {
        ALL.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", ")
    }

    /// Checks a step's `with` for this fault: known names, required ones
    /// present.
    pub fn check(self, with: Option<&Map<String, Value>>) -> Result<(), FaultError> {
        let known = params(self);
        let empty = Map::new();
        let with = with.unwrap_or(&empty);
        for k in with.keys() {
            if !known.iter().any(|(n, _)| n == k) {
                return Err(FaultError::UnknownParam {
                    fault: self.name(),
                    key: k.clone(),
                    expected: known
                        .iter()
                        .map(|(n, _)| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        for (n, required) in known {
            if *required && !with.contains_key(*n) {
                return Err(FaultError::Missing {
                    fault: self.name(),
                    param: n,
                });
            }
        }
        if self == Fault::Netem {
            netem_argv(with).map(|_| ())?;
        }
        Ok(())
    }

    /// The Chaos Mesh kind it creates, if it is not native.
    pub fn chaos_mesh_kind(self) -> Option<(&'static str, &'static str)> {
        match self {
            Fault::PodKill | Fault::Netem => None,
            Fault::NetworkDelay | Fault::NetworkLoss => Some(("NetworkChaos", "networkchaos")),
            Fault::CpuStress | Fault::MemoryStress => Some(("StressChaos", "stresschaos")),
            Fault::IoLatency => Some(("IOChaos", "iochaos")),
        }
    }
}

/// The network interface `chaos.netem` acts on (default `eth0`).
pub fn netem_interface(with: &Map<String, Value>) -> Result<String, FaultError> {
    let iface = with
        .get("interface")
        .and_then(Value::as_str)
        .unwrap_or("eth0");
    if iface.is_empty()
        || iface.len() > 15
        || !iface
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(FaultError::Invalid(format!(
            "chaos.netem: interface {iface:?} is not an interface name"
        )));
    }
    Ok(iface.to_string())
}

/// The argv that adds the netem qdisc: each value checked, each an
/// argument of its own.
pub fn netem_argv(with: &Map<String, Value>) -> Result<Vec<String>, FaultError> {
    let iface = netem_interface(with)?;
    let mut argv: Vec<String> = ["tc", "qdisc", "replace", "dev", &iface, "root", "netem"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let delay = with.get("delay").map(|v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let loss = with.get("loss").map(|v| match v {
        Value::String(s) => s.trim_end_matches('%').to_string(),
        other => other.to_string(),
    });
    if delay.is_none() && loss.is_none() {
        return Err(FaultError::Invalid(
            "chaos.netem needs delay, loss or both".into(),
        ));
    }
    if let Some(d) = delay {
        let digits = d
            .trim_end_matches("ms")
            .trim_end_matches("us")
            .trim_end_matches('s');
        if digits.is_empty()
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || digits.len() == d.len()
        {
            return Err(FaultError::Invalid(format!(
                "chaos.netem: delay {d:?} must look like 100ms, 500us or 1s"
            )));
        }
        argv.extend(["delay".to_string(), d]);
    }
    if let Some(l) = loss {
        match l.parse::<f64>() {
            Ok(p) if (0.0..=100.0).contains(&p) => {
                argv.extend(["loss".to_string(), format!("{l}%")])
            }
            _ => {
                return Err(FaultError::Invalid(format!(
                    "chaos.netem: loss {l:?} must be a percentage, 0 to 100"
                )));
            }
        }
    }
    Ok(argv)
}

/// The argv that removes it again.
pub fn netem_cleanup_argv(iface: &str) -> Vec<String> {
    ["tc", "qdisc", "del", "dev", iface, "root"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// How many of `matched` pods the mode takes, never above the cap.
pub fn count(mode: Mode, matched: usize, cap: u32) -> usize {
    let wanted = match mode {
        Mode::One => 1,
        Mode::All => matched,
        Mode::Fixed(n) => n as usize,
        Mode::Percent(p) => (matched * p as usize / 100).max(1),
    };
    wanted.min(matched).min(cap as usize)
}

/// `app=web,tier=api` as Chaos Mesh `labelSelectors`; equality only.
pub fn label_map(selector: &str) -> Result<Map<String, Value>, FaultError> {
    let mut out = Map::new();
    for part in selector.split(',') {
        let (k, v) = part
            .split_once('=')
            .filter(|(k, v)| !k.ends_with('!') && !v.starts_with('='))
            .ok_or_else(|| {
                FaultError::Invalid(format!(
                    "Chaos Mesh faults need an equality selector (a=b,c=d), not {selector:?}"
                ))
            })?;
        out.insert(k.trim().to_string(), json!(v.trim()));
    }
    Ok(out)
}

fn text(with: &Map<String, Value>, key: &str) -> Option<String> {
    with.get(key).map(|v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// The Chaos Mesh object for a fault: in the blast radius's first
/// namespace, selecting its namespaces and labels, `mode: fixed` with the
/// capped count, labelled as quench's.
pub fn chaos_mesh_object(
    fault: Fault,
    with: &Map<String, Value>,
    blast: &BlastRadius,
    affected: usize,
    name: &str,
    labels: &Map<String, Value>,
) -> Result<Value, FaultError> {
    let (kind, _) = fault
        .chaos_mesh_kind()
        .ok_or(FaultError::Native(fault.name()))?;
    let mut spec = json!({
        "mode": "fixed",
        "value": affected.to_string(),
        "selector": {
            "namespaces": blast.namespaces,
            "labelSelectors": label_map(&blast.selector)?,
        },
    });
    match fault {
        Fault::NetworkDelay => {
            spec["action"] = json!("delay");
            spec["delay"] = json!({"latency": text(with, "latency"), "jitter": text(with, "jitter").unwrap_or_else(|| "0ms".into())});
        }
        Fault::NetworkLoss => {
            spec["action"] = json!("loss");
            spec["loss"] = json!({"loss": text(with, "loss")});
        }
        Fault::CpuStress => {
            spec["stressors"] = json!({"cpu": {"workers": with.get("workers"), "load": with.get("load").cloned().unwrap_or(json!(100))}});
        }
        Fault::MemoryStress => {
            spec["stressors"] =
                json!({"memory": {"workers": with.get("workers"), "size": text(with, "size")}});
        }
        Fault::IoLatency => {
            spec["action"] = json!("latency");
            spec["delay"] = json!(text(with, "delay"));
            spec["volumePath"] = json!(text(with, "volume_path"));
            spec["path"] = json!(text(with, "path").unwrap_or_default());
            spec["percent"] = with.get("percent").cloned().unwrap_or(json!(100));
        }
        Fault::PodKill | Fault::Netem => unreachable!("native"),
    }
    Ok(json!({
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": blast.namespaces[0], "labels": labels},
        "spec": spec,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blast(mode: Mode, cap: u32) -> BlastRadius {
        BlastRadius {
            namespaces: vec!["shop".into()],
            selector: "app=web".into(),
            mode,
            max_pods: Some(cap),
        }
    }

    #[test]
    fn the_cap_always_wins() {
        assert_eq!(count(Mode::One, 5, 3), 1);
        assert_eq!(count(Mode::All, 5, 3), 3);
        assert_eq!(count(Mode::Fixed(4), 5, 2), 2);
        assert_eq!(count(Mode::Fixed(4), 2, 9), 2);
        assert_eq!(count(Mode::Percent(50), 10, 9), 5);
        assert_eq!(count(Mode::Percent(10), 3, 9), 1);
        assert_eq!(count(Mode::All, 0, 3), 0);
    }

    #[test]
    fn params_are_checked() {
        assert!(Fault::PodKill.check(None).is_ok());
        let w: Map<String, Value> =
            serde_json::from_value(json!({"latency": "100ms", "jiter": "1ms"})).unwrap();
        assert!(
            Fault::NetworkDelay
                .check(Some(&w))
                .unwrap_err()
                .to_string()
                .contains("`jiter`")
        );
        assert!(
            Fault::NetworkLoss
                .check(None)
                .unwrap_err()
                .to_string()
                .contains("`loss` is required")
        );
    }

    #[test]
    fn netem_values_are_checked_and_stay_separate_arguments() {
        let w = |v: Value| -> Map<String, Value> { serde_json::from_value(v).unwrap() };
        assert_eq!(
            netem_argv(&w(json!({"delay": "100ms", "loss": 5}))).unwrap(),
            [
                "tc", "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", "100ms", "loss",
                "5%"
            ]
        );
        for bad in [
            json!({}),
            json!({"delay": "100ms; reboot"}),
            json!({"delay": "fast"}),
            json!({"loss": 150}),
            json!({"delay": "1s", "interface": "eth0 root"}),
        ] {
            assert!(netem_argv(&w(bad.clone())).is_err(), "{bad}");
        }
        assert!(Fault::Netem.check(Some(&w(json!({"delay": "1s"})))).is_ok());
        assert_eq!(
            netem_cleanup_argv("eth0"),
            ["tc", "qdisc", "del", "dev", "eth0", "root"]
        );
    }

    #[test]
    fn chaos_mesh_objects_carry_the_capped_count_and_the_selector() {
        let w: Map<String, Value> = serde_json::from_value(json!({"latency": "200ms"})).unwrap();
        let o = chaos_mesh_object(
            Fault::NetworkDelay,
            &w,
            &blast(Mode::All, 2),
            2,
            "q-1",
            &Map::new(),
        )
        .unwrap();
        assert_eq!(o["kind"], "NetworkChaos");
        assert_eq!(o["spec"]["mode"], "fixed");
        assert_eq!(o["spec"]["value"], "2");
        assert_eq!(o["spec"]["selector"]["labelSelectors"]["app"], "web");
        assert_eq!(o["spec"]["delay"]["latency"], "200ms");
        assert!(label_map("app!=web").is_err());
    }
}
