//! `goroutine.dump`: the `goroutine?debug=2` text of a Go service, grouped
//! by identical stacks and counted, so that "250 goroutines blocked in
//! main.leakyWorker" is the first line an on-call engineer reads.
//!
//! ```yaml
//! - id: goroutines
//!   uses: goroutine.dump
//!   with: {url: "http://checkout:6060"}
//! ```

use super::{Acts, Step, StepCtx};
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::StepError;

/// The most text read from the service (a dump of a million goroutines is
/// hundreds of megabytes; the groups are clear long before that).
pub const MAX_BYTES: usize = 64 << 20;

/// The parameters.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The service's base URL (where `/debug/pprof/` is served).
    #[serde(default)]
    pub url: Option<String>,
    /// Or a pod, reached through the API server's pod proxy.
    #[serde(default)]
    pub pod: Option<String>,
    /// The pod's namespace (default `default`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The pod's pprof port.
    #[serde(default, deserialize_with = "super::opt_number")]
    #[schemars(schema_with = "super::number_schema")]
    pub port: Option<u16>,
    /// Seconds to wait for the dump (default 30).
    #[serde(default = "thirty")]
    pub timeout_seconds: u64,
    /// How many groups to return (default 20).
    #[serde(default = "twenty")]
    pub top: usize,
}

fn twenty() -> usize {
    20
}

fn thirty() -> u64 {
    30
}

/// Goroutines with the same state and the same stack.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    /// How many.
    pub count: usize,
    /// Their state (`chan receive`, `IO wait`, `running`, ...).
    pub state: String,
    /// The first frame outside the Go runtime: where they are stuck.
    pub function: String,
    /// The whole stack, innermost first, functions only.
    pub stack: Vec<String>,
}

/// Groups a `debug=2` dump. Pure, so it is tested on text.
pub fn summarise(text: &str) -> (usize, Vec<Group>) {
    let mut groups: HashMap<(String, Vec<String>), usize> = HashMap::new();
    let mut total = 0;
    for block in text.split("\n\n") {
        let mut lines = block.lines().filter(|l| !l.trim().is_empty());
        let Some(header) = lines.next() else { continue };
        let Some(rest) = header.strip_prefix("goroutine ") else {
            continue;
        };
        // "goroutine 18 [chan receive, 5 minutes]:"
        let state = rest
            .split_once('[')
            .and_then(|(_, s)| s.split_once(']'))
            .map(|(s, _)| s.split(',').next().unwrap_or(s).trim().to_string())
            .unwrap_or_default();
        let stack: Vec<String> = lines
            .filter(|l| !l.starts_with('\t') && !l.starts_with("created by "))
            .map(|l| match l.rfind('(') {
                Some(i) if l.ends_with(')') || l.ends_with("...)") => l[..i].to_string(),
                _ => l.to_string(),
            })
            .collect();
        total += 1;
        *groups.entry((state, stack)).or_default() += 1;
    }
    let mut out: Vec<Group> = groups
        .into_iter()
        .map(|((state, stack), count)| Group {
            count,
            function: stack
                .iter()
                .find(|f| {
                    !(f.starts_with("runtime.")
                        || f.starts_with("internal/")
                        || f.starts_with("runtime/"))
                })
                .or(stack.first())
                .cloned()
                .unwrap_or_default(),
            state,
            stack,
        })
        .collect();
    out.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.function.cmp(&b.function))
    });
    (total, out)
}

/// One human line per group: `250 goroutines blocked in main.leakyWorker (chan receive)`.
pub fn line(g: &Group) -> String {
    let noun = if g.count == 1 {
        "goroutine"
    } else {
        "goroutines"
    };
    let verb = if g.state == "running" || g.state == "runnable" {
        "in"
    } else {
        "blocked in"
    };
    format!("{} {noun} {verb} {} ({})", g.count, g.function, g.state)
}

/// Fetches and summarises the dump.
pub async fn run(
    http: &reqwest::Client,
    kube: Option<&dyn crate::k8s::Kube>,
    p: Params,
) -> Result<Value, StepError> {
    let target = super::Target::new(&p.url, &p.pod, &p.namespace, p.port)?;
    let body = target
        .get(
            http,
            kube,
            "debug/pprof/goroutine?debug=2",
            std::time::Duration::from_secs(p.timeout_seconds),
            MAX_BYTES,
        )
        .await?;
    let (total, groups) = summarise(&String::from_utf8_lossy(&body));
    let summary: Vec<String> = groups.iter().take(p.top).map(line).collect();
    Ok(json!({
        "target": target.label(),
        "total": total,
        "summary": summary,
        "groups": groups.into_iter().take(p.top).collect::<Vec<_>>(),
    }))
}

/// The `goroutine.dump` step type.
pub struct GoroutineDump;

impl Step for GoroutineDump {
    const NAME: &'static str = "goroutine.dump";
    const OUTPUT: &'static str = "`target`, `total` (goroutines), `groups` (count, state, function, stack; largest first) and `summary` lines.";
    const DESTRUCTIVE: bool = false;
    type Params = Params;

    fn target(p: &Params) -> Acts {
        Acts::maybe(p.namespace.as_deref(), p.pod.as_deref())
    }

    fn urls(p: &Params) -> Vec<&str> {
        p.url.as_deref().into_iter().collect()
    }

    async fn run(ctx: &StepCtx<'_>, p: Params) -> Result<Value, StepError> {
        run(ctx.http, ctx.kube, p).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "goroutine 1 [IO wait]:\ninternal/poll.runtime_pollWait(0x7f, 0x72)\n\t/usr/lib/go/src/runtime/netpoll.go:305 +0x89\nnet/http.(*Server).Serve(0xc0000)\n\t/usr/lib/go/src/net/http/server.go:3102 +0x4db\nmain.main()\n\t/src/main.go:90 +0x1\n\ngoroutine 20 [chan receive, 3 minutes]:\nmain.leakyWorker(0xc000)\n\t/src/main.go:30 +0x25\ncreated by main.leak\n\t/src/main.go:38 +0x85\n\ngoroutine 21 [chan receive]:\nmain.leakyWorker(0xc001)\n\t/src/main.go:30 +0x25\ncreated by main.leak\n\t/src/main.go:38 +0x85\n";

    #[test]
    fn groups_identical_stacks_and_names_where_they_are_stuck() {
        let (total, groups) = summarise(DUMP);
        assert_eq!(total, 3);
        assert_eq!(groups[0].count, 2);
        assert_eq!(groups[0].function, "main.leakyWorker");
        assert_eq!(
            groups[0].state, "chan receive",
            "the duration is not part of the state"
        );
        assert_eq!(
            line(&groups[0]),
            "2 goroutines blocked in main.leakyWorker (chan receive)"
        );
        assert_eq!(
            groups[1].function, "net/http.(*Server).Serve",
            "runtime frames are skipped; methods keep their receiver"
        );
        assert_eq!(summarise("").0, 0);
        assert_eq!(summarise("garbage\n\nmore").0, 0);
    }
}
