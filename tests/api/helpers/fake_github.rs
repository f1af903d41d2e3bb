//! A stateful fake of the GitHub REST API calls the license provisioner makes, on a local HTTP
//! server: users, one organization with one team, invitations and memberships. Its answers
//! have the shapes of GitHub's documented ones (status codes included: 201 on an invitation,
//! 204 on a removal, 404 for what is not there, 422 for an invitee already invited or a
//! member). Every request is recorded with its path, body and token header.
//! (Shared by tests/api and tests/cli.rs, which includes it by path.)

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const ORG: &str = "manicinc";
pub const TEAM: &str = "synthstack-pro";
pub const TEAM_ID: i64 = 4_711;
pub const TOKEN: &str = "ghp_faketoken0123456789";

#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub body: Value,
    pub authorization: Option<String>,
    pub api_version: Option<String>,
}

#[derive(Default)]
struct State {
    /// By lower-case login: (id, login).
    users: HashMap<String, (i64, String)>,
    /// By lower-case login: `pending` or `active`.
    memberships: HashMap<String, &'static str>,
    /// Members of the team, lower-case logins.
    team: Vec<String>,
    next_invitation: i64,
    created: Vec<String>,
    /// The answer to the next invitation is held back this long (it is created at once).
    hold_invitation: Option<std::time::Duration>,
    /// The next N calls under the path prefix answer 502.
    failing: (String, usize),
    /// Then the next N calls under the path prefix answer 429 with `Retry-After: 1`.
    limited: (String, usize),
    received: Vec<Received>,
}

#[derive(Clone)]
pub struct FakeGithub {
    pub server: Arc<MockServer>,
    state: Arc<Mutex<State>>,
}

impl FakeGithub {
    pub async fn start() -> FakeGithub {
        let fake = FakeGithub {
            server: Arc::new(MockServer::start().await),
            state: Arc::default(),
        };
        Mock::given(wiremock::matchers::any())
            .respond_with(fake.clone())
            .mount(&fake.server)
            .await;
        fake
    }

    pub fn base_url(&self) -> String {
        self.server.uri()
    }

    pub fn add_user(&self, login: &str, id: i64) {
        self.state
            .lock()
            .unwrap()
            .users
            .insert(login.to_lowercase(), (id, login.to_owned()));
    }

    /// The account is renamed: GitHub knows it (its membership and team included) only by
    /// the new login.
    pub fn rename(&self, from: &str, to: &str) {
        let mut st = self.state.lock().unwrap();
        let (old, new) = (from.to_lowercase(), to.to_lowercase());
        let (id, _) = st.users.remove(&old).expect("a known user");
        st.users.insert(new.clone(), (id, to.to_owned()));
        if let Some(m) = st.memberships.remove(&old) {
            st.memberships.insert(new.clone(), m);
        }
        for member in st.team.iter_mut() {
            if *member == old {
                *member = new.clone();
            }
        }
    }

    /// A member of the organization already (not of the team).
    pub fn add_member(&self, login: &str) {
        self.state
            .lock()
            .unwrap()
            .memberships
            .insert(login.to_lowercase(), "active");
    }

    /// The user accepts their invitation: a member of the organization and the team.
    pub fn accept(&self, login: &str) {
        let mut st = self.state.lock().unwrap();
        let key = login.to_lowercase();
        assert_eq!(
            st.memberships.get(&key),
            Some(&"pending"),
            "{login} was not invited"
        );
        st.memberships.insert(key.clone(), "active");
        st.team.push(key);
    }

    /// The invitation expires unaccepted.
    pub fn expire(&self, login: &str) {
        let mut st = self.state.lock().unwrap();
        let key = login.to_lowercase();
        assert_eq!(st.memberships.remove(&key), Some("pending"));
    }

    /// `pending`, `active` or `None`.
    pub fn membership(&self, login: &str) -> Option<&'static str> {
        self.state
            .lock()
            .unwrap()
            .memberships
            .get(&login.to_lowercase())
            .copied()
    }

    pub fn in_team(&self, login: &str) -> bool {
        self.state
            .lock()
            .unwrap()
            .team
            .contains(&login.to_lowercase())
    }

    /// The next `n` calls whose path starts with `prefix` answer 502.
    pub fn fail_next(&self, prefix: &str, n: usize) {
        self.state.lock().unwrap().failing = (prefix.to_owned(), n);
    }

    /// The next `n` calls whose path starts with `prefix` (after any failing ones) answer 429.
    pub fn rate_limit_next(&self, prefix: &str, n: usize) {
        self.state.lock().unwrap().limited = (prefix.to_owned(), n);
    }

    /// Creates the next invitation at once but holds its answer back for `delay`.
    pub fn hold_next_invitation(&self, delay: std::time::Duration) {
        self.state.lock().unwrap().hold_invitation = Some(delay);
    }

    /// An invitation sent outside the provisioner (or by a worker that died before recording
    /// it).
    pub fn invite_directly(&self, login: &str) {
        let mut st = self.state.lock().unwrap();
        st.memberships.insert(login.to_lowercase(), "pending");
        st.created.push(login.to_lowercase());
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    pub fn received_on(&self, method: &str, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.method == method && r.path == path)
            .collect()
    }

    /// The invitations created (answered 201), oldest first, by login.
    pub fn invitations_sent(&self) -> Vec<String> {
        self.state.lock().unwrap().created.clone()
    }
}

fn not_found() -> ResponseTemplate {
    ResponseTemplate::new(404).set_body_json(json!({
        "message": "Not Found",
        "documentation_url": "https://docs.github.com/rest",
        "status": "404"
    }))
}

impl Respond for FakeGithub {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let header = |name: &str| {
            request
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let mut st = self.state.lock().unwrap();
        let path = request.url.path().to_owned();
        st.received.push(Received {
            method: request.method.to_string(),
            path: path.clone(),
            body: serde_json::from_slice(&request.body).unwrap_or(Value::Null),
            authorization: header("authorization"),
            api_version: header("x-github-api-version"),
        });
        if header("authorization").as_deref() != Some(&format!("Bearer {TOKEN}")) {
            return ResponseTemplate::new(401).set_body_json(json!({"message": "Bad credentials"}));
        }
        if st.failing.1 > 0 && path.starts_with(&st.failing.0) {
            st.failing.1 -= 1;
            return ResponseTemplate::new(502).set_body_string("<html>Bad gateway</html>");
        }
        if st.limited.1 > 0 && path.starts_with(&st.limited.0) {
            st.limited.1 -= 1;
            return ResponseTemplate::new(429)
                .insert_header("Retry-After", "1")
                .set_body_json(json!({"message": "You have exceeded a secondary rate limit"}));
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let method = request.method.as_str();
        match (method, segments.as_slice()) {
            ("GET", ["users", login]) => match st.users.get(&login.to_lowercase()) {
                Some((id, login)) => ResponseTemplate::new(200)
                    .set_body_json(json!({"login": login, "id": id, "type": "User"})),
                None => not_found(),
            },
            ("GET", ["user", id]) => {
                let id: i64 = id.parse().unwrap_or(-1);
                match st.users.values().find(|(uid, _)| *uid == id) {
                    Some((id, login)) => ResponseTemplate::new(200)
                        .set_body_json(json!({"login": login, "id": id, "type": "User"})),
                    None => not_found(),
                }
            }
            ("GET", ["orgs", ORG, "teams", TEAM]) => ResponseTemplate::new(200)
                .set_body_json(json!({"id": TEAM_ID, "slug": TEAM, "name": "SynthStack Pro"})),
            ("GET", ["orgs", ORG, "invitations"]) => {
                let pending: Vec<Value> = st
                    .memberships
                    .iter()
                    .filter(|(_, state)| **state == "pending")
                    .map(|(login, _)| json!({"login": login, "role": "direct_member"}))
                    .collect();
                ResponseTemplate::new(200).set_body_json(Value::Array(pending))
            }
            ("POST", ["orgs", ORG, "invitations"]) => {
                let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
                let Some(id) = body["invitee_id"].as_i64() else {
                    return ResponseTemplate::new(422)
                        .set_body_json(json!({"message": "Validation Failed"}));
                };
                let Some(login) = st
                    .users
                    .iter()
                    .find(|(_, (uid, _))| *uid == id)
                    .map(|(key, _)| key.clone())
                else {
                    return ResponseTemplate::new(422).set_body_json(
                        json!({"message": "Validation Failed", "errors": [{"message": "Invitee does not exist"}]}),
                    );
                };
                if st.memberships.contains_key(&login) {
                    return ResponseTemplate::new(422).set_body_json(json!({
                        "message": "Validation Failed",
                        "errors": [{"resource": "OrganizationInvitation", "code": "unprocessable",
                                    "field": "data", "message": "Invitee is already a part of this organization"}],
                    }));
                }
                st.next_invitation += 1;
                let invitation = 9_000 + st.next_invitation;
                st.memberships.insert(login.clone(), "pending");
                st.created.push(login.clone());
                let held = st.hold_invitation.take().unwrap_or_default();
                ResponseTemplate::new(201).set_delay(held).set_body_json(json!({
                    "id": invitation, "login": login, "role": "direct_member",
                    "team_count": 1, "invitation_teams_url": format!("https://api.github.com/organizations/1/invitations/{invitation}/teams"),
                }))
            }
            ("GET", ["orgs", ORG, "memberships", login]) => {
                match st.memberships.get(&login.to_lowercase()) {
                    Some(state) => ResponseTemplate::new(200).set_body_json(json!({
                        "state": state, "role": "member",
                        "organization": {"login": ORG},
                        "user": {"login": login},
                    })),
                    None => not_found(),
                }
            }
            ("DELETE", ["orgs", ORG, "memberships", login]) => {
                let key = login.to_lowercase();
                st.team.retain(|m| *m != key);
                match st.memberships.remove(&key) {
                    Some(_) => ResponseTemplate::new(204),
                    None => not_found(),
                }
            }
            ("PUT", ["orgs", ORG, "teams", TEAM, "memberships", login]) => {
                let key = login.to_lowercase();
                match st.memberships.get(&key).copied() {
                    Some("active") => {
                        if !st.team.contains(&key) {
                            st.team.push(key);
                        }
                        ResponseTemplate::new(200)
                            .set_body_json(json!({"state": "active", "role": "member"}))
                    }
                    // GitHub would invite a non-member; the provisioner never asks that.
                    _ => ResponseTemplate::new(422)
                        .set_body_json(json!({"message": "not a member of the organization"})),
                }
            }
            ("DELETE", ["orgs", ORG, "teams", TEAM, "memberships", login]) => {
                let key = login.to_lowercase();
                let before = st.team.len();
                st.team.retain(|m| *m != key);
                if st.team.len() < before {
                    ResponseTemplate::new(204)
                } else {
                    not_found()
                }
            }
            _ => not_found(),
        }
    }
}
