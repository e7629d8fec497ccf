//! This process's name where several processes meet: worker instance ids, controller lease
//! holders and log lines.

/// `<hostname>-<pid>`: unique on a machine, readable in logs.
pub fn process_id() -> String {
    format!("{}-{}", hostname().unwrap_or_else(|| "worker".into()), std::process::id())
}

/// This machine's name as a piece of a queue or bucket name: at most `max` characters of
/// lowercase ASCII letters, digits and '-' (anything else becomes '-'); `host` if it has none.
pub fn name_fragment(max: usize) -> String {
    fragment(&hostname().unwrap_or_default(), max)
}

fn hostname() -> Option<String> {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok())
}

fn fragment(name: &str, max: usize) -> String {
    let safe: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' })
        .take(max)
        .collect();
    if safe.is_empty() {
        "host".into()
    } else {
        safe
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_name_becomes_a_resource_name_fragment() {
        assert_eq!(fragment("Web-1.example.COM", 32), "web-1-example-com");
        assert_eq!(fragment("a".repeat(40).as_str(), 32).len(), 32);
        assert_eq!(fragment("", 32), "host");
        assert_eq!(fragment("héllo", 32), "h-llo");
        let own = name_fragment(32);
        assert!(!own.is_empty() && own.len() <= 32, "{own}");
    }
}
