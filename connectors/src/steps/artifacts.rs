//! Where steps keep evidence bytes.

/// What an [`Artifacts`] call returns: async, so a store never blocks the
/// step's task (and the async worker under it).
pub type ArtifactFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, ArtifactsError>> + Send + 'a>>;

/// Why an artifact store did not do what a step asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactsError {
    /// Refused for good: over a size limit or a budget, a bad key, a
    /// store that keeps no baselines.
    #[error("{0}")]
    Refused(String),
    /// The store failed; a later try may work.
    #[error("{0}")]
    Failed(String),
}

/// Where steps keep evidence bytes (profiles, flame graphs, traces). The
/// engine hands in the knowledge store; without one, steps still report
/// their summaries and say that nothing was kept.
pub trait Artifacts: Send + Sync {
    /// Stores bytes durably; returns their id (`sha256:<hex>`).
    fn put<'a>(
        &'a self,
        kind: &'a str,
        media_type: &'a str,
        bytes: &'a [u8],
        about: &'a Captured<'a>,
    ) -> ArtifactFuture<'a, String>;
    /// Reads an artifact back (a baseline profile, for a diff).
    fn get<'a>(&'a self, id: &'a str) -> ArtifactFuture<'a, Option<Vec<u8>>>;
    /// Makes the stored profile `id` the healthy baseline of `service` for
    /// profiles of `kind`.
    /// `about` says which run saved it.
    fn set_baseline<'a>(
        &'a self,
        service: &'a str,
        kind: &'a str,
        id: &'a str,
        about: &'a Captured<'a>,
    ) -> ArtifactFuture<'a, ()> {
        let _ = (service, kind, id, about);
        Box::pin(async {
            Err(ArtifactsError::Refused(
                "this artifact store keeps no baselines".into(),
            ))
        })
    }
    /// The id of the baseline of `service` for `kind`, if one was saved.
    fn baseline<'a>(
        &'a self,
        service: &'a str,
        kind: &'a str,
    ) -> ArtifactFuture<'a, Option<String>> {
        let _ = (service, kind);
        Box::pin(async { Ok(None) })
    }
}

/// Where and when evidence was captured, kept with its bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Captured<'a> {
    /// What it was captured from: a URL, `pod/NAMESPACE/NAME:PORT`, a pid.
    pub target: Option<&'a str>,
    /// The capture window, UTC.
    pub window: Option<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)>,
    /// The incident it was captured for.
    pub incident: Option<&'a str>,
    /// The step that captured it.
    pub step: Option<&'a str>,
}
