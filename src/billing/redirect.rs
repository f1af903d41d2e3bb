//! Redirect URLs handed to Stripe must stay on the product's own origins (no open redirect).

/// `scheme://host[:port]` of an absolute http(s) URL, normalised (default ports dropped).
pub fn parse_origin(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return None;
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return None;
    }
    Some(parsed.origin().ascii_serialization())
}

/// True when `url` is an absolute http(s) URL whose origin is one of `allowed`.
pub fn is_allowed(url: &str, allowed: &[String]) -> bool {
    // Stripe substitutes this template; it is not valid in a URL parser's eyes, so swap it out.
    let candidate = url.replace("{CHECKOUT_SESSION_ID}", "cs_placeholder");
    match parse_origin(&candidate) {
        Some(origin) => allowed
            .iter()
            .filter_map(|a| parse_origin(a))
            .any(|a| a == origin),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec![
            "https://app.example.com".into(),
            "http://localhost:3000".into(),
        ]
    }

    #[test]
    fn accepts_urls_on_allowed_origins() {
        assert!(is_allowed(
            "https://app.example.com/billing?x=1",
            &allowed()
        ));
        assert!(is_allowed("https://app.example.com:443/ok", &allowed()));
        assert!(is_allowed(
            "http://localhost:3000/success?session_id={CHECKOUT_SESSION_ID}",
            &allowed()
        ));
    }

    #[test]
    fn refuses_other_origins_and_tricks() {
        for url in [
            "https://evil.example.com/",
            "https://app.example.com.evil.com/",
            "https://app.example.com@evil.com/",
            "http://app.example.com/",
            "https://app.example.com:8443/",
            "//evil.com/",
            "/relative/path",
            "javascript:alert(1)",
            "",
        ] {
            assert!(!is_allowed(url, &allowed()), "{url} should be refused");
        }
    }
}
