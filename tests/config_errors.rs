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
    assert_eq!(config.store.path, Path::new("conf/sonde.db"));
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
