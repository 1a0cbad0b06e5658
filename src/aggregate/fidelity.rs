//! Fidelity: whether a target's answers come from the model asked for and really stream, over
//! the runs of a bucket or a window — the evidence that lets a substituting gateway or a
//! fake streamer lose its weight.
//!
//! Counts merge by addition; the latest answer's identity (served model, upstream) and the
//! latest substitution merge by time, so any order of merging gives the same result.

use serde::{Deserialize, Serialize};

use super::sparse::NotContained;
use crate::result::ResultRecord;

/// Who answered one run, as the provider said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Unix ms of the run.
    pub at_ms: i64,
    /// The model id the provider said answered.
    pub served_model: Option<String>,
    /// The upstream a gateway said served it.
    pub upstream: Option<String>,
}

/// Substitution and streaming evidence of some runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Fidelity {
    /// Answers whose provider named the model that served them.
    pub named: u64,
    /// Of those, answers from another model than the one asked for.
    pub substituted: u64,
    /// Answers of a probe that checks streaming which really streamed.
    pub streamed: u64,
    /// Answers of a probe that checks streaming which arrived whole (fake streaming).
    pub not_streamed: u64,
    /// The latest answer that named its model.
    pub latest: Option<Identity>,
    /// The latest substitution: unix ms and the model that answered.
    pub last_substitute: Option<(i64, String)>,
}

impl Fidelity {
    /// Counts one run, at unix ms `at_ms`.
    pub fn add(&mut self, record: &ResultRecord, at_ms: i64) {
        match record.cap_streaming {
            Some(true) => self.streamed += 1,
            Some(false) => self.not_streamed += 1,
            None => {}
        }
        let Some(served) = &record.served_model else {
            return;
        };
        self.named += 1;
        if record.model_substituted {
            self.substituted += 1;
            if self
                .last_substitute
                .as_ref()
                .is_none_or(|(at, _)| *at <= at_ms)
            {
                self.last_substitute = Some((at_ms, served.clone()));
            }
        }
        if self
            .latest
            .as_ref()
            .is_none_or(|latest| latest.at_ms <= at_ms)
        {
            self.latest = Some(Identity {
                at_ms,
                served_model: Some(served.clone()),
                upstream: record.upstream.clone(),
            });
        }
    }

    /// Adds another bucket's evidence.
    pub fn merge(&mut self, other: &Fidelity) {
        self.named += other.named;
        self.substituted += other.substituted;
        self.streamed += other.streamed;
        self.not_streamed += other.not_streamed;
        if let Some(theirs) = &other.latest
            && self
                .latest
                .as_ref()
                .is_none_or(|mine| mine.at_ms <= theirs.at_ms)
        {
            self.latest = Some(theirs.clone());
        }
        if let Some(theirs) = &other.last_substitute
            && self
                .last_substitute
                .as_ref()
                .is_none_or(|mine| mine.0 <= theirs.0)
        {
            self.last_substitute = Some(theirs.clone());
        }
    }

    /// Takes `bucket`'s answer counts out (a bucket this merged): the latest answer and
    /// substitution are taken whole by a merge and stay.
    pub fn subtract_counts(&mut self, bucket: &Fidelity) -> Result<(), NotContained> {
        for (mine, theirs) in [
            (&mut self.named, bucket.named),
            (&mut self.substituted, bucket.substituted),
            (&mut self.streamed, bucket.streamed),
            (&mut self.not_streamed, bucket.not_streamed),
        ] {
            *mine = mine.checked_sub(theirs).ok_or(NotContained)?;
        }
        Ok(())
    }

    /// Substituted ÷ named answers; `None` without a named answer.
    pub fn substituted_rate(&self) -> Option<f64> {
        (self.named > 0).then(|| self.substituted as f64 / self.named as f64)
    }

    /// Really streamed ÷ stream answers; `None` without a stream answer.
    pub fn streamed_rate(&self) -> Option<f64> {
        let answers = self.streamed + self.not_streamed;
        (answers > 0).then(|| self.streamed as f64 / answers as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{Outcome, sample};

    fn run(served: Option<&str>, substituted: bool, streamed: Option<bool>) -> ResultRecord {
        let mut record = sample(Outcome::Ok);
        record.served_model = served.map(str::to_owned);
        record.model_substituted = substituted;
        record.cap_streaming = streamed;
        record
    }

    #[test]
    fn counts_add_and_the_latest_identity_wins_in_any_merge_order() {
        let mut early = Fidelity::default();
        early.add(&run(Some("small"), true, Some(false)), 1_000);
        early.add(&run(None, false, None), 1_500);
        let mut late = Fidelity::default();
        late.add(&run(Some("asked"), false, Some(true)), 2_000);
        let mut a = early.clone();
        a.merge(&late);
        let mut b = late.clone();
        b.merge(&early);
        assert_eq!(a, b);
        assert_eq!((a.named, a.substituted), (2, 1));
        assert_eq!(a.substituted_rate(), Some(0.5));
        assert_eq!(a.streamed_rate(), Some(0.5));
        assert_eq!(a.latest.unwrap().served_model.as_deref(), Some("asked"));
        assert_eq!(a.last_substitute, Some((1_000, "small".to_owned())));
        assert_eq!(Fidelity::default().streamed_rate(), None);
    }
}
