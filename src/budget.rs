//! Monthly budgets per provider, in USD and tokens, checked before a run is sent.
//!
//! A run reserves its worst case (the prompt, its tool schema and every token `max_tokens`
//! allows, at the model's prices) before it is sent; if this month's spend plus what is
//! reserved plus that would pass a cap, it is not sent and is recorded as `skipped_budget`.
//! When it finishes, the reservation is replaced by what it really cost ([`Reservation::settle`]);
//! a run that never finishes (abandoned at shutdown, cancelled while waiting for its gate)
//! gives its reservation back when the [`Reservation`] is dropped, so nothing stays reserved
//! for ever. Spend is loaded from the store at start, so it survives restarts; the month is
//! the calendar month in UTC.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::{Budget, Config, Target};
use crate::probe::{Probe, ProbeKind};
use crate::result::ResultRecord;

/// Tokens charged per message on top of its text (role markers, separators) and for the
/// nonce sonde adds: generous, since this is a worst case.
const TOKENS_PER_MESSAGE: u64 = 8;

/// Spend of one provider this month, and what runs in flight may still add.
#[derive(Debug, Default)]
struct Account {
    cap: Budget,
    month: String,
    spent_usd: f64,
    spent_tokens: u64,
    reserved_usd: f64,
    reserved_tokens: u64,
}

/// What a run reserved: settled with what the run spent, or released when dropped unsettled.
#[derive(Debug)]
pub struct Reservation {
    /// The provider's account; `None` for a provider without one.
    account: Option<Arc<Mutex<Account>>>,
    month: String,
    usd: f64,
    tokens: u64,
}

impl Reservation {
    /// Replaces the reservation by what the run really spent.
    pub fn settle(mut self, record: &ResultRecord) {
        let spent = (
            record.cost_usd.unwrap_or(0.0),
            u64::from(record.input_tokens.unwrap_or(0))
                + u64::from(record.output_tokens.unwrap_or(0)),
        );
        self.give_back(spent);
    }

    /// Takes the reservation off its account and adds `spent` (USD, tokens); once.
    fn give_back(&mut self, (usd, tokens): (f64, u64)) {
        let Some(account) = self.account.take() else {
            return;
        };
        let mut account = account.lock().unwrap_or_else(|poison| poison.into_inner());
        if account.month != self.month {
            return;
        }
        account.reserved_usd = (account.reserved_usd - self.usd).max(0.0);
        account.reserved_tokens = account.reserved_tokens.saturating_sub(self.tokens);
        account.spent_usd += usd;
        account.spent_tokens += tokens;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.give_back((0.0, 0));
    }
}

/// Every provider's account.
#[derive(Debug, Default)]
pub struct Budgets {
    accounts: HashMap<String, Arc<Mutex<Account>>>,
}

/// A run's worst case: USD (0 without prices) and tokens.
pub fn worst_case(target: &Target, probe: &Probe) -> (f64, u64) {
    if probe.kind == ProbeKind::Models {
        return (0.0, 0);
    }
    // A conservative 3 characters per token (English averages about 4).
    let prompt_chars = probe.prompt_chars_max();
    // A quality item is a system and a user message.
    let messages = if probe.family.is_some() {
        2
    } else {
        probe.messages.len() as u64
    };
    let input = (prompt_chars as u64).div_ceil(3) + TOKENS_PER_MESSAGE * (messages + 1);
    let output = u64::from(probe.max_tokens) + u64::from(target.model.reasoning_budget);
    let usd = (input as f64 * target.model.input_price.unwrap_or(0.0)
        + output as f64 * target.model.output_price.unwrap_or(0.0))
        / 1e6;
    (usd, input + output)
}

impl Budgets {
    /// Accounts for every provider of `config`, starting from `spent` (USD, tokens by
    /// provider) in `month` (`YYYY-MM`).
    pub fn new(config: &Config, spent: &HashMap<String, (f64, u64)>, month: &str) -> Budgets {
        let accounts = config
            .providers
            .iter()
            .map(|provider| {
                let (usd, tokens) = spent.get(&provider.name).copied().unwrap_or_default();
                let account = Account {
                    cap: provider.budget,
                    month: month.to_owned(),
                    spent_usd: usd,
                    spent_tokens: tokens,
                    ..Account::default()
                };
                (provider.name.clone(), Arc::new(Mutex::new(account)))
            })
            .collect();
        Budgets { accounts }
    }

    /// Reserves the worst case of `probe` on `target` in `month`, or says which cap it
    /// would pass.
    pub fn reserve(
        &self,
        target: &Target,
        probe: &Probe,
        month: &str,
    ) -> Result<Reservation, String> {
        let (usd, tokens) = worst_case(target, probe);
        let Some(shared) = self.accounts.get(&target.provider.name) else {
            return Ok(Reservation {
                account: None,
                month: month.to_owned(),
                usd,
                tokens,
            });
        };
        let mut account = shared.lock().unwrap_or_else(|poison| poison.into_inner());
        if account.month != month {
            *account = Account {
                cap: account.cap,
                month: month.to_owned(),
                ..Account::default()
            };
        }
        if let Some(cap) = account.cap.monthly_usd {
            let would = account.spent_usd + account.reserved_usd + usd;
            if would > cap {
                return Err(format!(
                    "not sent: {} has spent ${:.4} of its ${cap} monthly budget in {month} \
                     (${:.4} more in flight), and this run could cost up to ${usd:.4}",
                    target.provider.name, account.spent_usd, account.reserved_usd
                ));
            }
        }
        if let Some(cap) = account.cap.monthly_tokens {
            let would = account.spent_tokens + account.reserved_tokens + tokens;
            if would > cap {
                return Err(format!(
                    "not sent: {} has spent {} of its {cap} monthly tokens in {month} \
                     ({} more in flight), and this run could use up to {tokens}",
                    target.provider.name, account.spent_tokens, account.reserved_tokens
                ));
            }
        }
        account.reserved_usd += usd;
        account.reserved_tokens += tokens;
        Ok(Reservation {
            account: Some(Arc::clone(shared)),
            month: month.to_owned(),
            usd,
            tokens,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::probe::ProbeSet;

    #[test]
    fn an_unsettled_reservation_is_given_back_when_dropped() {
        let config = Config::parse(
            Path::new("t.toml"),
            "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
             budget = { monthly_tokens = 500 }\n[[providers.models]]\nid = \"m\"\n",
        )
        .unwrap();
        let target = &config.targets[0];
        let probe = ProbeSet::builtin().get("stream").unwrap().clone();
        let (_, worst) = worst_case(target, &probe);
        assert!(worst > 250 && worst <= 500, "{worst}: one fits, two do not");
        let budgets = Budgets::new(&config, &HashMap::new(), "2026-01");
        let first = budgets.reserve(target, &probe, "2026-01").unwrap();
        assert!(budgets.reserve(target, &probe, "2026-01").is_err());
        drop(first);
        let second = budgets.reserve(target, &probe, "2026-01").unwrap();
        let mut record = crate::result::sample(crate::result::Outcome::Ok);
        record.input_tokens = Some(10);
        record.output_tokens = Some(20);
        second.settle(&record);
        let third = budgets.reserve(target, &probe, "2026-01");
        assert!(third.is_ok(), "30 spent + {worst} reserved fits in 500");
    }
}
