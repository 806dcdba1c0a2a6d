//! High availability: which of two replicas leads, by a
//! `coordination.k8s.io/v1` Lease in quench's namespace.
//!
//! The leader renews the Lease every `retry_period`; a standby takes it
//! over once it has seen the same renewal for longer than
//! `lease_duration` (time measured on its own clock from when it saw the
//! record, as client-go does, so the replicas' clocks need not agree).
//! Every takeover adds one to `leaseTransitions`, the lease epoch that
//! every audited action records.
//!
//! Fencing: the leader may start an action only while its last renewal is
//! younger than `renew_deadline`, which is shorter than the duration, so it
//! has stopped acting before a standby can take over. A leader that passes
//! its renew deadline has lost the Lease for good: the process exits (as
//! controller-runtime's managers do) and comes back as a standby that
//! follows the new leader. Each replica publishes the URL its peer reaches
//! it at in the Lease's `quench.dev/peer-url` annotation.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tracing::{error, info, warn};

use crate::config::HaConfig;

/// The annotation that carries the holder's URL.
pub const PEER_URL: &str = "quench.dev/peer-url";

/// What this replica knows of the election.
pub struct Ha {
    /// The configuration.
    pub config: HaConfig,
    /// This replica's name in the Lease.
    pub identity: String,
    leader: AtomicBool,
    /// When the Lease was last renewed by this replica (while leader).
    renewed: Mutex<Option<Instant>>,
    epoch: AtomicU64,
    leader_url: Mutex<Option<String>>,
    /// Told once when this replica becomes the leader.
    became_leader: tokio::sync::Notify,
}

/// The Lease as last seen, and when.
struct Observed {
    holder: Option<String>,
    renew: Option<String>,
    at: Instant,
}

impl Ha {
    /// A replica that is not the leader yet.
    pub fn new(config: HaConfig) -> Arc<Ha> {
        let identity = config.identity.clone().unwrap_or_else(hostname);
        Arc::new(Ha {
            config,
            identity,
            leader: AtomicBool::new(false),
            renewed: Mutex::new(None),
            epoch: AtomicU64::new(0),
            leader_url: Mutex::new(None),
            became_leader: tokio::sync::Notify::new(),
        })
    }

    /// Whether this replica holds the Lease.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Acquire)
    }

    /// The lease epoch (`leaseTransitions`) this replica leads in.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The leader's URL, as its Lease says (none: no leader, or this one).
    pub fn leader_url(&self) -> Option<String> {
        self.leader_url
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Fencing: `Ok(epoch)` while this replica leads and renewed within the
    /// renew deadline; otherwise why it must not act.
    pub fn may_act(&self) -> Result<u64, String> {
        if !self.is_leader() {
            return Err("this replica is not the leader".into());
        }
        let renewed = *self.renewed.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = Duration::from_secs(self.config.renew_deadline_seconds);
        match renewed {
            Some(at) if at.elapsed() < deadline => Ok(self.epoch()),
            Some(at) => Err(format!(
                "the lease was last renewed {:.1} s ago, past the renew deadline of {} s: this replica may have lost it",
                at.elapsed().as_secs_f64(),
                deadline.as_secs()
            )),
            None => Err("the lease was never renewed".into()),
        }
    }

    /// Waits until this replica leads.
    pub async fn wait_leader(&self) {
        loop {
            let told = self.became_leader.notified();
            if self.is_leader() {
                return;
            }
            told.await;
        }
    }

    /// Runs the election for ever. Returns only when leadership is lost
    /// (the caller exits).
    pub async fn run(self: Arc<Self>, client: kube::Client) {
        let api: Api<Lease> = Api::namespaced(client, &self.config.namespace);
        let retry = Duration::from_secs(self.config.retry_period_seconds);
        let duration = Duration::from_secs(self.config.lease_duration_seconds);
        let deadline = Duration::from_secs(self.config.renew_deadline_seconds);
        let mut seen: Option<Observed> = None;
        loop {
            // An API server that does not answer must not hold the loop
            // past the renew deadline: each try has the retry period.
            match tokio::time::timeout(retry, self.try_once(&api, &mut seen, duration)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    warn!(error = %e, lease = %self.config.lease_name, "lease: could not read or write")
                }
                Err(_) => {
                    warn!(lease = %self.config.lease_name, "lease: the API server did not answer within the retry period")
                }
            }
            if self.is_leader()
                && let Err(why) = self.may_act()
            {
                error!(
                    why,
                    "lease lost: this replica stops acting and exits; it comes back as a standby"
                );
                self.leader.store(false, Ordering::Release);
                return;
            }
            // A leader tries again sooner when a renewal failed, so a
            // short API outage does not cost it the Lease.
            let wait = if self.is_leader() {
                retry.min(deadline / 4)
            } else {
                retry
            };
            tokio::time::sleep(wait).await;
        }
    }

    async fn try_once(
        &self,
        api: &Api<Lease>,
        seen: &mut Option<Observed>,
        duration: Duration,
    ) -> Result<(), kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let Some(mut lease) = api.get_opt(&self.config.lease_name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.lease_name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    annotations: Some(
                        [(PEER_URL.to_string(), self.config.advertise_url.clone())].into(),
                    ),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.config.lease_duration_seconds as i32),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            let before = Instant::now();
            api.create(&PostParams::default(), &lease).await?;
            self.led(0, before, None);
            return Ok(());
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let renew = spec.renew_time.as_ref().map(|t| t.0.to_string());
        let changed = match seen {
            Some(o) => o.holder != holder || o.renew != renew,
            None => true,
        };
        if changed {
            *seen = Some(Observed {
                holder: holder.clone(),
                renew: renew.clone(),
                at: Instant::now(),
            });
        }
        let observed_at = seen.as_ref().map(|o| o.at).unwrap_or_else(Instant::now);
        let mine = holder.as_deref() == Some(self.identity.as_str());
        let expired = holder.is_none() || observed_at.elapsed() > duration;
        if !mine && !expired {
            if self.is_leader() {
                // Someone else holds it: this replica lost it.
                self.renewed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
            }
            let url = lease
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(PEER_URL).cloned());
            *self.leader_url.lock().unwrap_or_else(|e| e.into_inner()) = url;
            return Ok(());
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        let mut next = spec;
        let epoch = if mine {
            transitions
        } else {
            next.acquire_time = Some(now.clone());
            next.holder_identity = Some(self.identity.clone());
            transitions + 1
        };
        next.lease_transitions = Some(epoch);
        next.renew_time = Some(now);
        next.lease_duration_seconds = Some(self.config.lease_duration_seconds as i32);
        lease.spec = Some(next);
        lease
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(PEER_URL.to_string(), self.config.advertise_url.clone());
        let before = Instant::now();
        // The resource version in `lease` makes this a compare-and-swap: a
        // replica that raced us gets a conflict and stays a standby.
        let written = api
            .replace(&self.config.lease_name, &PostParams::default(), &lease)
            .await?;
        let renew = written
            .spec
            .as_ref()
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0.to_string());
        *seen = Some(Observed {
            holder: Some(self.identity.clone()),
            renew,
            at: Instant::now(),
        });
        self.led(epoch.max(0) as u64, before, (!mine).then_some(()));
        Ok(())
    }

    /// Records a successful acquisition or renewal, sent at `sent`: the
    /// deadline counts from before the request, never from its answer.
    fn led(&self, epoch: u64, sent: Instant, took_over: Option<()>) {
        *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) = Some(sent);
        self.epoch.store(epoch, Ordering::Release);
        *self.leader_url.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if !self.leader.swap(true, Ordering::AcqRel) {
            info!(identity = %self.identity, epoch, took_over = took_over.is_some(), "lease acquired: this replica leads");
            self.became_leader.notify_waiters();
        }
    }
}

/// The host name (a StatefulSet pod's name), or `quench`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "quench".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fencing follows the renewals: no lease, none; a renewal, one epoch
    /// of acting; past the renew deadline, none again.
    #[test]
    fn a_leader_acts_only_within_its_renew_deadline() {
        let ha = Ha::new(HaConfig {
            renew_deadline_seconds: 10,
            ..HaConfig::default()
        });
        assert!(ha.may_act().unwrap_err().contains("not the leader"));
        ha.led(3, Instant::now(), Some(()));
        assert_eq!(ha.may_act(), Ok(3));
        assert!(ha.is_leader() && ha.leader_url().is_none());
        let long_ago = Instant::now() - Duration::from_secs(11);
        ha.led(3, long_ago, None);
        let why = ha.may_act().unwrap_err();
        assert!(why.contains("past the renew deadline of 10 s"), "{why}");
    }
}
