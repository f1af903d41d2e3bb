//! The GitHub boundary: the only code that calls GitHub's REST API (docs/LICENSES.md), with
//! the provisioner's token, for one organization and one team. Every call answers what GitHub
//! said in the provisioner's terms, or a [`CallError`] that says how long GitHub asked to wait.
//! Calls are counted in `tollgate_github_calls_total{operation, outcome}`.
//!
//! (octocrab would bring a second HTTP stack and its own `jsonwebtoken`; the six calls below
//! need neither, and reqwest is already built with the project's rustls backend.)

use std::time::Duration;

use anyhow::Context;
use reqwest::{Method, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::billing::license::{GithubUsername, Membership};
use crate::config::GithubSettings;

/// A call that did not get an answer the provisioner can use. Every one is tried again later
/// (the license's step is durable); `asked` is the wait GitHub asked for, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    pub asked: Option<Duration>,
    pub detail: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for CallError {}

/// A GitHub user, as `GET /users/{username}` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct User {
    pub id: i64,
    pub login: String,
}

/// What an organization invitation came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invitation {
    /// Sent; GitHub's id of it.
    Sent { id: i64 },
    /// Refused as invalid (422): the user is already invited or a member, or cannot be invited;
    /// GitHub's message says which.
    Refused { message: String },
}

pub struct GitHub {
    http: reqwest::Client,
    base: url::Url,
    organization: String,
    team_slug: String,
    token: SecretString,
    team_id: OnceCell<i64>,
}

impl GitHub {
    /// The client of a complete configuration; `None` when it is not (no plan provisions).
    pub fn from_settings(settings: &GithubSettings) -> anyhow::Result<Option<GitHub>> {
        let (Some(organization), Some(team_slug), Some(token)) = (
            settings.organization(),
            settings.team_slug(),
            settings.token(),
        ) else {
            return Ok(None);
        };
        let timeout = Duration::from_secs(settings.timeout_seconds);
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "Tollgate/",
                env!("CARGO_PKG_VERSION"),
                " (licenses)"
            ))
            .build()?;
        let base = url::Url::parse(&settings.api_base).context("provisioning.github.api_base")?;
        Ok(Some(GitHub {
            http,
            base,
            organization,
            team_slug,
            token,
            team_id: OnceCell::new(),
        }))
    }

    pub fn organization(&self) -> &str {
        &self.organization
    }

    pub fn team_slug(&self) -> &str {
        &self.team_slug
    }

    fn url(&self, segments: &[&str]) -> url::Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("an http(s) base URL has a path")
            .pop_if_empty()
            .extend(segments);
        url
    }

    async fn call(
        &self,
        operation: &'static str,
        method: Method,
        segments: &[&str],
        body: Option<serde_json::Value>,
    ) -> Result<Response, CallError> {
        let mut request = self
            .http
            .request(method, self.url(segments))
            .bearer_auth(self.token.expose_secret())
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await;
        let outcome = match &answer {
            Ok(r) if r.status().is_success() => "ok",
            Ok(r) if r.status() == StatusCode::NOT_FOUND => "not_found",
            Ok(r) if rate_limited(r) => "rate_limited",
            Ok(r) if r.status().is_server_error() => "server_error",
            Ok(_) => "refused",
            Err(_) => "network",
        };
        metrics::counter!("tollgate_github_calls_total", "operation" => operation, "outcome" => outcome)
            .increment(1);
        answer.map_err(|e| CallError {
            asked: None,
            detail: format!("{operation}: no answer from GitHub: {e}"),
        })
    }

    /// `GET /users/{username}`: the user, `None` when GitHub knows no such user.
    pub async fn user(&self, username: &GithubUsername) -> Result<Option<User>, CallError> {
        let answer = self
            .call("get_user", Method::GET, &["users", username.as_str()], None)
            .await?;
        match answer.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(json(answer, "get_user").await?)),
            _ => Err(failure(answer, "get_user").await),
        }
    }

    /// `GET /user/{account_id}`: the user by GitHub's id (a login can be renamed; the id stays),
    /// `None` when the account is gone.
    pub async fn user_by_id(&self, id: i64) -> Result<Option<User>, CallError> {
        let answer = self
            .call(
                "get_user_by_id",
                Method::GET,
                &["user", &id.to_string()],
                None,
            )
            .await?;
        match answer.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(json(answer, "get_user_by_id").await?)),
            _ => Err(failure(answer, "get_user_by_id").await),
        }
    }

    /// The team's id (`GET /orgs/{org}/teams/{slug}`), asked once per process.
    pub async fn team_id(&self) -> Result<i64, CallError> {
        self.team_id
            .get_or_try_init(|| async {
                #[derive(Deserialize)]
                struct Team {
                    id: i64,
                }
                let answer = self
                    .call(
                        "get_team",
                        Method::GET,
                        &["orgs", &self.organization, "teams", &self.team_slug],
                        None,
                    )
                    .await?;
                if !answer.status().is_success() {
                    return Err(failure(answer, "get_team").await);
                }
                Ok(json::<Team>(answer, "get_team").await?.id)
            })
            .await
            .copied()
    }

    /// For `check-config --connect`: the team is found (`GET /orgs/{org}/teams/{slug}`) and
    /// the token may see the organization's invitations (`GET /orgs/{org}/invitations`, which
    /// needs what inviting needs: an owner's token with `admin:org`). Answers the team's id.
    pub async fn check_access(&self) -> Result<i64, CallError> {
        let team = self.team_id().await?;
        let answer = self
            .call(
                "list_invitations",
                Method::GET,
                &["orgs", &self.organization, "invitations"],
                None,
            )
            .await?;
        if !answer.status().is_success() {
            return Err(failure(answer, "list_invitations").await);
        }
        Ok(team)
    }

    /// `POST /orgs/{org}/invitations`: invites the user as a member, into the team.
    pub async fn invite(&self, user_id: i64) -> Result<Invitation, CallError> {
        let team_id = self.team_id().await?;
        let body = serde_json::json!({
            "invitee_id": user_id,
            "role": "direct_member",
            "team_ids": [team_id],
        });
        let answer = self
            .call(
                "create_invitation",
                Method::POST,
                &["orgs", &self.organization, "invitations"],
                Some(body),
            )
            .await?;
        match answer.status() {
            StatusCode::UNPROCESSABLE_ENTITY => Ok(Invitation::Refused {
                message: message(answer).await,
            }),
            s if s.is_success() => {
                #[derive(Deserialize)]
                struct Sent {
                    id: i64,
                }
                let sent: Sent = json(answer, "create_invitation").await?;
                Ok(Invitation::Sent { id: sent.id })
            }
            _ => Err(failure(answer, "create_invitation").await),
        }
    }

    /// `GET /orgs/{org}/memberships/{username}`: a member, invited, or neither.
    pub async fn membership(&self, username: &GithubUsername) -> Result<Membership, CallError> {
        let answer = self
            .call(
                "get_membership",
                Method::GET,
                &["orgs", &self.organization, "memberships", username.as_str()],
                None,
            )
            .await?;
        match answer.status() {
            StatusCode::NOT_FOUND => Ok(Membership::None),
            s if s.is_success() => {
                #[derive(Deserialize)]
                struct Member {
                    state: String,
                }
                let member: Member = json(answer, "get_membership").await?;
                Ok(match member.state.as_str() {
                    "active" => Membership::Active,
                    _ => Membership::Pending,
                })
            }
            _ => Err(failure(answer, "get_membership").await),
        }
    }

    /// A `DELETE` whose target already gone counts as done (404).
    async fn delete(&self, operation: &'static str, segments: &[&str]) -> Result<(), CallError> {
        let answer = self.call(operation, Method::DELETE, segments, None).await?;
        match answer.status() {
            StatusCode::NOT_FOUND => Ok(()),
            s if s.is_success() => Ok(()),
            _ => Err(failure(answer, operation).await),
        }
    }

    /// `DELETE /orgs/{org}/memberships/{username}`: removes a member from the organization (and
    /// so from its teams), or cancels their pending invitation. Already gone counts as done.
    pub async fn remove_membership(&self, username: &GithubUsername) -> Result<(), CallError> {
        self.delete(
            "remove_membership",
            &["orgs", &self.organization, "memberships", username.as_str()],
        )
        .await
    }

    /// `PUT /orgs/{org}/teams/{slug}/memberships/{username}` for a member of the organization:
    /// adds them to the team (already in it counts as done).
    pub async fn add_to_team(&self, username: &GithubUsername) -> Result<(), CallError> {
        let answer = self
            .call(
                "add_team_membership",
                Method::PUT,
                &[
                    "orgs",
                    &self.organization,
                    "teams",
                    &self.team_slug,
                    "memberships",
                    username.as_str(),
                ],
                Some(serde_json::json!({ "role": "member" })),
            )
            .await?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(failure(answer, "add_team_membership").await)
        }
    }

    /// `DELETE /orgs/{org}/teams/{slug}/memberships/{username}`. Already gone counts as done.
    pub async fn remove_from_team(&self, username: &GithubUsername) -> Result<(), CallError> {
        self.delete(
            "remove_team_membership",
            &[
                "orgs",
                &self.organization,
                "teams",
                &self.team_slug,
                "memberships",
                username.as_str(),
            ],
        )
        .await
    }
}

/// GitHub's rate limits: 429, or 403 with the primary limit spent or a `Retry-After`
/// (secondary limits).
fn rate_limited(answer: &Response) -> bool {
    let header = |name: &str| answer.headers().get(name).and_then(|v| v.to_str().ok());
    answer.status() == StatusCode::TOO_MANY_REQUESTS
        || (answer.status() == StatusCode::FORBIDDEN
            && (header("x-ratelimit-remaining") == Some("0") || header("retry-after").is_some()))
}

/// How long GitHub asked to wait: `Retry-After` seconds, else until `x-ratelimit-reset` when
/// the limit is spent.
fn asked_wait(answer: &Response) -> Option<Duration> {
    let header = |name: &str| answer.headers().get(name).and_then(|v| v.to_str().ok());
    if let Some(seconds) = header("retry-after").and_then(|v| v.trim().parse::<u64>().ok()) {
        return Some(Duration::from_secs(seconds));
    }
    if header("x-ratelimit-remaining") == Some("0") {
        let reset = header("x-ratelimit-reset")?.trim().parse::<i64>().ok()?;
        let wait = reset - chrono::Utc::now().timestamp();
        return Some(Duration::from_secs(u64::try_from(wait.max(1)).unwrap_or(1)));
    }
    None
}

async fn message(answer: Response) -> String {
    #[derive(Deserialize)]
    struct Problem {
        message: Option<String>,
        #[serde(default)]
        errors: Vec<serde_json::Value>,
    }
    let text = answer.text().await.unwrap_or_default();
    match serde_json::from_str::<Problem>(&text) {
        Ok(p) => {
            let details: Vec<String> = p
                .errors
                .iter()
                .filter_map(|e| e.get("message").and_then(|m| m.as_str()).map(str::to_owned))
                .collect();
            let head = p.message.unwrap_or_default();
            if details.is_empty() {
                head
            } else {
                format!("{head}: {}", details.join("; "))
            }
        }
        Err(_) => text.chars().take(200).collect(),
    }
}

async fn failure(answer: Response, operation: &str) -> CallError {
    let status = answer.status();
    let asked = rate_limited(&answer).then(|| asked_wait(&answer)).flatten();
    let text = message(answer).await;
    CallError {
        asked,
        detail: format!("{operation}: GitHub answered {status}: {text}"),
    }
}

async fn json<T: serde::de::DeserializeOwned>(
    answer: Response,
    operation: &str,
) -> Result<T, CallError> {
    answer.json().await.map_err(|e| CallError {
        asked: None,
        detail: format!("{operation}: GitHub's answer is not what its API documents: {e}"),
    })
}
