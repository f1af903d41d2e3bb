//! A browser app on another origin calls Tollgate: real preflights, as a browser sends them.

use reqwest::Method;

use crate::helpers::{spawn_app, APP_ORIGIN};

async fn preflight(app: &crate::helpers::TestApp, path: &str, origin: &str) -> reqwest::Response {
    app.http
        .request(Method::OPTIONS, app.url(path))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap()
}

fn header(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_ascii_lowercase())
}

#[tokio::test]
async fn the_apps_origin_may_call_with_a_token_and_read_the_answer() {
    let app = spawn_app().await;
    // By default the allowed origins are those checkout may redirect to.
    let res = preflight(&app, "/v1/checkout", APP_ORIGIN).await;
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(
        header(&res, "access-control-allow-origin").as_deref(),
        Some(APP_ORIGIN)
    );
    let methods = header(&res, "access-control-allow-methods").unwrap();
    assert!(methods.contains("post"), "{methods}");
    let headers = header(&res, "access-control-allow-headers").unwrap();
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{headers}"
    );

    // The actual request carries the CORS headers the browser checks.
    let token = app.user_token("user-1");
    let res = app
        .http
        .get(app.url("/v1/status"))
        .header("Origin", APP_ORIGIN)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "access-control-allow-origin").as_deref(),
        Some(APP_ORIGIN)
    );
    let exposed = header(&res, "access-control-expose-headers").unwrap();
    assert!(exposed.contains("x-request-id"), "{exposed}");
}

#[tokio::test]
async fn another_origin_gets_no_cors_headers_and_non_browser_callers_are_unaffected() {
    let app = spawn_app().await;
    let res = preflight(&app, "/v1/checkout", "https://evil.example.net").await;
    assert_eq!(header(&res, "access-control-allow-origin"), None);
    // A request with a foreign Origin is still served (the browser, not Tollgate, withholds the
    // answer from the page), and one without Origin sees no CORS at all.
    let token = app.user_token("user-1");
    for origin in [Some("https://evil.example.net"), None] {
        let mut req = app.http.get(app.url("/v1/status")).bearer_auth(&token);
        if let Some(origin) = origin {
            req = req.header("Origin", origin);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200, "{origin:?}");
        assert_eq!(
            header(&res, "access-control-allow-origin"),
            None,
            "{origin:?}"
        );
    }
}
