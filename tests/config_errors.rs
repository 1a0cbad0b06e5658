//! Every kind of config error names the file, the line and the key.

use std::path::Path;

use sonde::config::{Config, ConfigError};

const GOOD: &str = r#"[[providers]]
name = "deepseek"
kind = "openai"
base_url = "https://api.deepseek.com/v1"
api_key_env = "DEEPSEEK_API_KEY"
timeout = "30s"

  [[providers.models]]
  id = "deepseek-chat"
  group = "deepseek-v3"
  input_price = 0.27
  output_price = 1.10
"#;

fn error_of(text: &str) -> ConfigError {
    Config::parse(Path::new("conf/sonde.toml"), text).expect_err("config must be rejected")
}

fn assert_names(err: &ConfigError, line: usize, key: &str, words: &str) {
    let message = err.to_string();
    assert_eq!(err.line(), Some(line), "{message}");
    assert_eq!(err.key(), Some(key), "{message}");
    assert!(
        message.starts_with(&format!("conf/sonde.toml:{line}: key `{key}`: ")),
        "{message}"
    );
    assert!(message.contains(words), "{message:?} should say {words:?}");
}

#[test]
fn the_good_config_loads() {
    let config = Config::parse(Path::new("sonde.toml"), GOOD).unwrap();
    assert_eq!(config.targets.len(), 1);
    let target = &config.targets[0];
    assert_eq!(target.id, "deepseek/deepseek-chat");
    assert_eq!(target.model.group, "deepseek-v3");
    assert_eq!(
        target.provider.base_url.as_str(),
        "https://api.deepseek.com/v1/"
    );
    assert_eq!(target.provider.timeout.as_secs(), 30);
    assert_eq!(target.probes, ["ping", "stream", "models"]);
}

#[test]
fn unknown_key() {
    let err = error_of(&GOOD.replace("timeout = \"30s\"", "timeout = \"30s\"\nretries = 3"));
    assert_names(&err, 7, "providers[0].retries", "unknown field `retries`");
}

#[test]
fn an_inline_key_is_refused_with_what_to_do() {
    let err = error_of(&GOOD.replace("api_key_env = \"DEEPSEEK_API_KEY\"", "api_key = \"sk-123\""));
    assert_names(&err, 5, "providers[0].api_key", "environment variable");
    assert!(
        !err.to_string().contains("sk-123"),
        "the value is never echoed"
    );
}

#[test]
fn a_key_pasted_into_api_key_env_is_not_echoed() {
    let err = error_of(&GOOD.replace("\"DEEPSEEK_API_KEY\"", "\"sk-live-abcdef123456\""));
    assert_names(
        &err,
        5,
        "providers[0].api_key_env",
        "NAME of an environment variable",
    );
    assert!(!err.to_string().contains("sk-live"));
}

#[test]
fn wrong_type() {
    let err = error_of(&GOOD.replace("input_price = 0.27", "input_price = \"cheap\""));
    assert_names(
        &err,
        11,
        "providers[0].models[0].input_price",
        "invalid type",
    );
    let err = error_of(&GOOD.replace("timeout = \"30s\"", "timeout = \"thirty\""));
    assert_names(&err, 6, "providers[0].timeout", "thirty");
}

#[test]
fn missing_field() {
    let err = error_of(&GOOD.replace("base_url = \"https://api.deepseek.com/v1\"\n", ""));
    assert_eq!(err.key(), Some("providers[0].base_url"), "{err}");
    assert!(
        err.to_string().contains("missing field `base_url`"),
        "{err}"
    );
    assert!(err.line().is_some_and(|line| line <= 2), "{err}");
}

#[test]
fn duplicate_target() {
    let text = format!("{GOOD}\n  [[providers.models]]\n  id = \"deepseek-chat\"\n");
    let err = error_of(&text);
    assert_names(
        &err,
        15,
        "providers[0].models[1].id",
        "duplicate target deepseek/deepseek-chat: already defined on line 9",
    );
}

#[test]
fn duplicate_provider() {
    let text = format!("{GOOD}\n{GOOD}");
    let err = error_of(&text);
    assert_names(&err, 15, "providers[1].name", "already defined on line 2");
}

#[test]
fn bad_url() {
    let err = error_of(&GOOD.replace("https://api.deepseek.com/v1", "api.deepseek.com/v1"));
    assert_names(&err, 4, "providers[0].base_url", "not a valid URL");
    let err = error_of(&GOOD.replace("https://api.deepseek.com/v1", "ftp://api.deepseek.com/v1"));
    assert_names(
        &err,
        4,
        "providers[0].base_url",
        "scheme must be http or https",
    );
}

#[test]
fn unknown_probe() {
    let err = error_of(&GOOD.replace(
        "output_price = 1.10",
        "output_price = 1.10\n  probes = [\"ping\", \"tool\"]",
    ));
    assert_names(
        &err,
        13,
        "providers[0].models[0].probes[1]",
        "no probe named \"tool\"",
    );
}

#[test]
fn unknown_kind() {
    let err = error_of(&GOOD.replace("kind = \"openai\"", "kind = \"cohere\""));
    assert_names(&err, 3, "providers[0].kind", "unknown variant `cohere`");
}

#[test]
fn credentials_in_headers_are_refused() {
    let err = error_of(&GOOD.replace(
        "timeout = \"30s\"",
        "timeout = \"30s\"\nheaders = { Authorization = \"Bearer sk-x\" }",
    ));
    assert_names(&err, 7, "providers[0].headers.Authorization", "api_key_env");
}

#[test]
fn negative_price() {
    let err = error_of(&GOOD.replace("output_price = 1.10", "output_price = -1.0"));
    assert_names(
        &err,
        12,
        "providers[0].models[0].output_price",
        "zero or more",
    );
}

#[test]
fn syntax_error() {
    let err = error_of(&GOOD.replace("kind = \"openai\"", "kind = openai"));
    assert_eq!(err.line(), Some(3), "{err}");
    assert!(err.to_string().contains("invalid TOML"), "{err}");
}

#[test]
fn a_missing_file_is_named() {
    let err = Config::load(Path::new("/nonexistent/sonde.toml")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/sonde.toml: cannot read the file"),
        "{err}"
    );
}

#[test]
fn bad_probe_files_are_named_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("odd.toml"),
        "max_tokens = 5\nstreaming = true\n",
    )
    .unwrap();
    let text = format!(
        "probes_dir = {:?}\n{GOOD}",
        dir.path().display().to_string()
    );
    let err = error_of(&text);
    let message = err.to_string();
    assert!(
        message.contains("odd.toml:2: key `streaming`: unknown field"),
        "{message}"
    );
}

#[test]
fn daemon_settings_have_safe_defaults_and_resolve_schedules() {
    let text = format!(
        "[schedules]\nping = \"every 30s\"\nstream = \"*/10 * * * *\"\n\n{}",
        GOOD.replace(
            "timeout = \"30s\"",
            "timeout = \"30s\"\nschedules = { ping = \"2m\" }\nbudget = { monthly_usd = 5.0 }"
        )
    );
    let config = Config::parse(Path::new("conf/sonde.toml"), &text).unwrap();
    let target = &config.targets[0];
    assert_eq!(target.provider.rate.requests, 10, "free-tier safe default");
    assert_eq!(target.provider.rate.per.as_secs(), 60);
    assert_eq!(target.provider.max_concurrency, 2);
    assert_eq!(target.provider.budget.monthly_usd, Some(5.0));
    use sonde::scheduler::Schedule;
    use std::time::Duration;
    assert_eq!(
        target.schedules["ping"],
        Schedule::Every(Duration::from_secs(120)),
        "the provider's schedule wins"
    );
    assert!(matches!(target.schedules["stream"], Schedule::Cron(_)));
    assert_eq!(
        target.schedules["models"],
        Schedule::Every(Duration::from_secs(3600))
    );
    assert_eq!(config.store.file(), Some(Path::new("conf/sonde.db")));
    assert_eq!(config.store.retention_days, 30);
    assert_eq!(config.health.down_after, 3);
}

#[test]
fn bad_daemon_settings_name_line_and_key() {
    let err = error_of(&format!("[schedules]\nping = \"every tuesday\"\n{GOOD}"));
    assert_names(&err, 2, "schedules.ping", "cron expression");
    let err = error_of(&format!("[schedules]\nfly = \"1m\"\n{GOOD}"));
    assert_names(&err, 2, "schedules.fly", "no probe named");
    let err = error_of(&GOOD.replace("timeout = \"30s\"", "timeout = \"30s\"\nrpm = 0"));
    assert_names(&err, 7, "providers[0].rpm", "at least 1");
    let err = error_of(&GOOD.replace(
        "timeout = \"30s\"",
        "timeout = \"30s\"\nbudget = { monthly_usd = -1.0 }",
    ));
    assert_names(&err, 7, "providers[0].budget.monthly_usd", "budget");
    let err = error_of(&format!("[health]\ndegraded_below = 1.5\n{GOOD}"));
    assert_names(&err, 2, "health.degraded_below", "between 0 and 1");
    let err = error_of(&format!("[store]\nretention = 3\n{GOOD}"));
    assert_names(&err, 2, "store.retention", "unknown field");
}

#[test]
fn every_duration_is_bounded_and_named_at_its_own_line() {
    let err = error_of(&GOOD.replace(
        "timeout = \"30s\"",
        "timeout = \"30s\"\nrate_window = \"99999999999999d\"",
    ));
    assert_names(&err, 7, "providers[0].rate_window", "between 1s and 1day");
    let err = error_of(&GOOD.replace(
        "timeout = \"30s\"",
        "timeout = \"30s\"\nstall_timeout = \"0s\"",
    ));
    assert_names(&err, 7, "providers[0].stall_timeout", "between 1ms and 1h");
    let err = error_of(&GOOD.replace("timeout = \"30s\"", "timeout = \"2days\""));
    assert_names(&err, 6, "providers[0].timeout", "between 1ms and 1h");
    let err = error_of(&format!("[publish]\nevery = \"0s\"\n{GOOD}"));
    assert_names(&err, 2, "publish.every", "between 1s and 1day");
    let err = error_of(&format!("[health]\nhold = \"5days\"\n{GOOD}"));
    assert_names(&err, 2, "health.hold", "at most 1day");
    let err = error_of(&format!(
        "[schedules]\nping = \"every 99999999999999d\"\n{GOOD}"
    ));
    assert_names(&err, 2, "schedules.ping", "between 1s and 366 days");
    let err = error_of(&GOOD.replace(
        "timeout = \"30s\"",
        "timeout = \"30s\"\nmax_body_bytes = 10",
    ));
    assert_names(&err, 7, "providers[0].max_body_bytes", "between 1024");
    let err = error_of(&format!("[store]\nretention_days = 99999999\n{GOOD}"));
    assert_names(&err, 2, "store.retention_days", "between 1 and 36500");
}

#[test]
fn a_cron_that_never_fires_is_refused() {
    let err = error_of(&format!("[schedules]\nping = \"0 0 30 2 *\"\n{GOOD}"));
    assert_names(&err, 2, "schedules.ping", "never fires");
}

#[test]
fn every_error_of_the_file_is_reported_at_once() {
    let text = format!(
        "[schedules]\nping = \"0 0 30 2 *\"\n\n[publish]\nwindow = \"2h\"\n\n{}",
        GOOD.replace(
            "timeout = \"30s\"",
            "timeout = \"30s\"\nretries = 3\nstall_timeout = \"0s\"\nrpm = 0\ncolour = \"blue\"",
        )
        .replace("output_price = 1.10", "output_price = -1.0")
    );
    let err = error_of(&text);
    let all: Vec<(Option<usize>, Option<&str>)> =
        err.all().iter().map(|e| (e.line(), e.key())).collect();
    assert_eq!(
        all,
        [
            (Some(2), Some("schedules.ping")),
            (Some(5), Some("publish.window")),
            (Some(13), Some("providers[0].retries")),
            (Some(14), Some("providers[0].stall_timeout")),
            (Some(15), Some("providers[0].rpm")),
            (Some(16), Some("providers[0].colour")),
            (Some(22), Some("providers[0].models[0].output_price")),
        ],
        "{err}"
    );
    let message = err.to_string();
    assert_eq!(message.lines().count(), 7, "one line per error:\n{message}");
    assert!(message.lines().all(|l| l.starts_with("conf/sonde.toml:")));
}

#[test]
fn credentials_in_any_header_or_body_field_are_refused() {
    for header in [
        "Cookie = \"session=abc\"",
        "ocp-apim-subscription-key = \"abc\"",
        "X-Auth-Token = \"abc\"",
    ] {
        let err = error_of(&GOOD.replace(
            "timeout = \"30s\"",
            &format!("timeout = \"30s\"\nheaders = {{ {header} }}"),
        ));
        assert_eq!(err.line(), Some(7), "{err}");
        assert!(err.to_string().contains("api_key_env"), "{err}");
        assert!(
            !err.to_string().contains("abc"),
            "the value is never echoed: {err}"
        );
    }
    for body in [
        "extra_body = { api_key = \"sk-x\" }",
        "extra_body = { metadata = { apiKey = \"sk-x\" } }",
        "extra_body = { Access-Token = \"sk-x\" }",
    ] {
        let err =
            error_of(&GOOD.replace("timeout = \"30s\"", &format!("timeout = \"30s\"\n{body}")));
        assert_eq!(err.line(), Some(7), "{err}");
        assert!(
            err.key()
                .is_some_and(|key| key.starts_with("providers[0].extra_body.")),
            "{err}"
        );
        assert!(!err.to_string().contains("sk-x"), "{err}");
    }
    let fine = GOOD.replace(
        "timeout = \"30s\"",
        "timeout = \"30s\"\nextra_body = { max_tokens = 5, reasoning = { max_tokens = 256 } }",
    );
    Config::parse(Path::new("sonde.toml"), &fine).expect("token limits are not tokens");
}

#[test]
fn names_with_control_characters_are_refused() {
    for (from, to, key) in [
        (
            "id = \"deepseek-chat\"",
            "id = \"deep\\u001b[2Jseek\"",
            "providers[0].models[0].id",
        ),
        (
            "id = \"deepseek-chat\"",
            "id = \"chat\\u202e\"",
            "providers[0].models[0].id",
        ),
        (
            "group = \"deepseek-v3\"",
            "group = \"v3\\u0085\"",
            "providers[0].models[0].group",
        ),
        (
            "name = \"deepseek\"",
            "name = \"deep\\u007f\"",
            "providers[0].name",
        ),
    ] {
        let err = error_of(&GOOD.replace(from, to));
        assert_eq!(err.key(), Some(key), "{err}");
        assert!(err.to_string().contains("control characters"), "{err}");
    }
}

#[test]
fn route_groups_name_known_groups_and_capabilities() {
    let config = Config::parse(
        Path::new("sonde.toml"),
        &format!("[groups.deepseek-v3]\nrequire = [\"tools\", \"streaming\", \"tools\"]\n{GOOD}"),
    )
    .unwrap();
    use sonde::capability::Capability;
    assert_eq!(
        config.groups["deepseek-v3"].require,
        [Capability::Streaming, Capability::Tools]
    );
    // The error points at the group's own header line.
    let err = error_of(&format!("[groups.llama]\nrequire = [\"tools\"]\n{GOOD}"));
    assert_names(&err, 1, "groups.llama", "no target is in route group");
    let err = error_of(&format!(
        "[groups.deepseek-v3]\nrequire = [\"vision\"]\n{GOOD}"
    ));
    assert_names(
        &err,
        2,
        "groups.deepseek-v3.require[0]",
        "unknown variant `vision`",
    );
    let err = error_of(&format!(
        "[publish]\nweights = {{ substitution = 2.0 }}\n{GOOD}"
    ));
    assert_names(&err, 2, "publish.weights", "between 0 and 1");
}

#[test]
fn a_store_is_a_file_or_a_postgres_variable_never_a_url() {
    let both = format!("[store]\npath = \"sonde.db\"\nurl_env = \"SONDE_DATABASE_URL\"\n{GOOD}");
    assert_names(&error_of(&both), 3, "store.url_env", "not both");
    let url = format!("[store]\nurl_env = \"postgres://sonde:hunter2@db/sonde\"\n{GOOD}");
    let err = error_of(&url);
    assert_names(&err, 2, "store.url_env", "NAME of an environment variable");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let ca = format!("[store]\npath = \"sonde.db\"\nca_file = \"ca.pem\"\n{GOOD}");
    assert_names(&error_of(&ca), 3, "store.ca_file", "PostgreSQL");
    let buffer = format!("[store]\nurl_env = \"SONDE_DATABASE_URL\"\nbuffer = 0\n{GOOD}");
    assert_names(&error_of(&buffer), 3, "store.buffer", "between 1 and");

    let good = format!(
        "[store]\nurl_env = \"SONDE_DATABASE_URL\"\nca_file = \"certs/ca.pem\"\nbuffer = 500\n{GOOD}"
    );
    let config = Config::parse(Path::new("conf/sonde.toml"), &good).unwrap();
    assert_eq!(config.store.file(), None);
    assert_eq!(config.store.buffer, 500);
    assert_eq!(
        config.store.backend,
        sonde::config::StoreBackend::Postgres {
            url_env: "SONDE_DATABASE_URL".into(),
            ca_file: Some("conf/certs/ca.pem".into()),
        }
    );
}

#[test]
fn quality_settings_are_bounded() {
    let text = format!("[quality]\nwindow = \"7d\"\nmargin = 0.7\n\n{GOOD}");
    assert_names(&error_of(&text), 3, "quality.margin", "at most 0.5");
    let text = format!("[quality]\nwindow = \"1h\"\n\n{GOOD}");
    assert_names(&error_of(&text), 2, "quality.window", "24h, 7d, 30d");
    let text = format!("[quality]\ndrift_accept = \"1m\"\n\n{GOOD}");
    assert_names(&error_of(&text), 2, "quality.drift_accept", "between 1h");
    let text = format!("[publish]\nweights = {{ quality = -1 }}\n\n{GOOD}");
    assert_names(&error_of(&text), 2, "publish.weights", "zero or more");
    let good = format!(
        "[quality]\nmargin = 0.1\nalpha = 0.05\n\n{}",
        GOOD.replace(
            "output_price = 1.10",
            "output_price = 1.10\n  reference = true"
        )
    );
    let config = Config::parse(Path::new("sonde.toml"), &good).unwrap();
    assert!(config.targets[0].model.reference);
    assert_eq!((config.quality.margin, config.quality.alpha), (0.1, 0.05));
}

#[test]
fn a_quality_probe_names_its_family() {
    let dir = tempfile::tempdir().unwrap();
    let probes = dir.path().join("probes");
    std::fs::create_dir(&probes).unwrap();
    std::fs::write(
        probes.join("canary.toml"),
        "kind = \"quality\"\nmax_tokens = 64\n",
    )
    .unwrap();
    let err = Config::parse(
        &dir.path().join("sonde.toml"),
        &format!("probes_dir = \"probes\"\n{GOOD}"),
    )
    .unwrap_err();
    assert_eq!(err.key(), Some("family"), "{err}");
    assert!(err.to_string().contains("canary.toml"), "{err}");
    std::fs::write(
        probes.join("canary.toml"),
        "kind = \"chat\"\nfamily = \"exact\"\nmax_tokens = 64\n[[messages]]\nrole = \"user\"\ncontent = \"hi\"\n",
    )
    .unwrap();
    let err = Config::parse(
        &dir.path().join("sonde.toml"),
        &format!("probes_dir = \"probes\"\n{GOOD}"),
    )
    .unwrap_err();
    assert_eq!((err.key(), err.line()), (Some("family"), Some(2)), "{err}");
}

#[test]
fn an_alert_names_its_secrets_by_variable_and_its_bounds() {
    let alert = |body: &str| format!("{GOOD}\n[[alerts]]\nname = \"a\"\n{body}\n");
    let err = error_of(&alert("kind = \"slack\""));
    assert_names(&err, 15, "alerts[0].url_env", "the variable holding");
    let err = error_of(&alert(
        "kind = \"webhook\"\nurl_env = \"https://hooks.example.com/x\"",
    ));
    assert_names(
        &err,
        17,
        "alerts[0].url_env",
        "NAME of an environment variable",
    );
    let err = error_of(&alert("kind = \"pagerduty\""));
    assert_names(&err, 15, "alerts[0].routing_key_env", "routing key");
    let err = error_of(&alert(
        "kind = \"webhook\"\nurl_env = \"HOOK\"\ncauses = [\"latency\"]",
    ));
    assert_names(
        &err,
        18,
        "alerts[0].causes",
        "health, quality, slo_fast, slo_slow or sync",
    );
    let err = error_of(&alert(
        "kind = \"webhook\"\nurl_env = \"HOOK\"\nreminder_every = \"5s\"",
    ));
    assert_names(&err, 18, "alerts[0].reminder_every", "between 1m");
    let good = alert(
        "kind = \"discord\"\nurl_env = \"HOOK\"\ntargets = [\"deepseek/*\"]\nfailure_threshold = 2",
    );
    let config = Config::parse(Path::new("sonde.toml"), &good).unwrap();
    let alert = &config.alerts[0];
    assert!(alert.follows("deepseek/deepseek-chat", "deepseek-v3"));
    assert!(!alert.follows("other/deepseek-chat", "deepseek-v3"));
    assert_eq!((alert.failure_threshold, alert.max_per_hour), (2, 20));
    assert_eq!(
        alert.causes,
        ["health", "quality", "slo_fast", "slo_slow", "sync"]
    );
}

#[test]
fn an_slo_is_checked_where_it_is_written() {
    let err = error_of(&GOOD.replace(
        "output_price = 1.10",
        "output_price = 1.10\n  slo = { availability = 1.0 }",
    ));
    assert_names(&err, 13, "providers[0].models[0].slo", "below 1");
    let err = error_of(&format!(
        "[groups.\"deepseek-v3\"]\nslo = {{ ttft_p95_ms = 2000, window = \"1y\" }}\n\n{GOOD}"
    ));
    assert_names(&err, 2, "groups.deepseek-v3.slo", "24h, 7d, 30d");
    let err = error_of(&format!("[groups.\"deepseek-v3\"]\nslo = {{}}\n\n{GOOD}"));
    assert_names(
        &err,
        2,
        "groups.deepseek-v3.slo",
        "`availability` or `ttft_p95_ms`",
    );
}

#[test]
fn a_gateway_sync_names_its_key_by_variable_and_its_url_without_credentials() {
    let key = format!(
        "[[sync]]\nkind = \"litellm\"\nurl = \"http://litellm:4000\"\nkey_env = \"sk-admin-hunter2\"\n{GOOD}"
    );
    let err = error_of(&key);
    assert_names(
        &err,
        4,
        "sync[0].key_env",
        "NAME of an environment variable",
    );
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let url = format!(
        "[[sync]]\nkind = \"litellm\"\nurl = \"http://admin:hunter2@litellm:4000\"\nkey_env = \"K\"\n{GOOD}"
    );
    let err = error_of(&url);
    assert_names(&err, 3, "sync[0].url", "without credentials");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let change = format!(
        "[[sync]]\nkind = \"litellm\"\nurl = \"http://litellm:4000\"\nkey_env = \"K\"\nmin_change = 1.5\n{GOOD}"
    );
    assert_names(&error_of(&change), 5, "sync[0].min_change", "below 1");
    let twice = format!(
        "[[sync]]\nkind = \"litellm\"\nurl = \"http://a:4000\"\nkey_env = \"K\"\n\
         [[sync]]\nkind = \"litellm\"\nurl = \"http://b:4000\"\nkey_env = \"K\"\n{GOOD}"
    );
    assert_names(&error_of(&twice), 7, "sync[1].name", "a name of its own");

    let good = format!(
        "[[sync]]\nname = \"prod\"\nkind = \"litellm\"\nurl = \"https://litellm.internal\"\n\
         key_env = \"LITELLM_MASTER_KEY\"\non_down = \"remove\"\nmin_change = 0\n{GOOD}"
    );
    let config = Config::parse(Path::new("conf/sonde.toml"), &good).unwrap();
    assert_eq!(config.sync.len(), 1);
    assert_eq!(config.sync[0].name, "prod");
    assert_eq!(config.sync[0].on_down, sonde::config::OnDown::Remove);
    assert_eq!(config.sync[0].min_change, 0.0);
    assert_eq!(config.sync[0].key_env, "LITELLM_MASTER_KEY");
}
