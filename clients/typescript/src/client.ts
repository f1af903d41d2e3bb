// A small Tollgate client on openapi-fetch and the types openapi-typescript generates from
// openapi/openapi.json (src/schema.d.ts, not committed: scripts/typescript-client.sh makes it).
// CI type-checks this file against the committed document, so an incompatible change to the
// document (a renamed or removed field, a changed type, a path or parameter that moved) fails
// the check. docs/CLIENTS.md shows how an app uses the same pieces.

import createClient, { type Client, type Middleware } from "openapi-fetch";
import type { components, paths } from "./schema";

type Schemas = components["schemas"];
export type Problem = Schemas["Problem"];
export type Config = Schemas["ConfigOut"];
export type Status = Schemas["StatusOut"];
export type FeatureVerdict = Schemas["FeatureOut"];
export type Interval = Schemas["Interval"];
export type Reason = Schemas["Reason"];
export type TollgateClient = Client<paths>;

/** A refusal: the HTTP status and the problem document (branch on `code`, never on `detail`). */
export class TollgateError extends Error {
  readonly status: number;
  readonly code: string;
  readonly problem: Problem;

  constructor(status: number, problem: Problem) {
    super(`${status} ${problem.code}: ${problem.detail}`);
    this.name = "TollgateError";
    this.status = status;
    this.code = problem.code;
    this.problem = problem;
  }
}

/**
 * A client for `baseUrl` (e.g. `https://billing.example.com`). `token` gives the bearer token
 * for each request: the end user's JWT in a frontend, a service JWT in a sibling service; with
 * none, the request goes without `Authorization` (enough for `GET /v1/config`).
 */
export function createTollgateClient(
  baseUrl: string,
  token: () => string | undefined | Promise<string | undefined>,
): TollgateClient {
  const client = createClient<paths>({ baseUrl });
  const bearer: Middleware = {
    async onRequest({ request }) {
      const jwt = await token();
      if (jwt) {
        request.headers.set("Authorization", `Bearer ${jwt}`);
      }
      return request;
    },
  };
  client.use(bearer);
  return client;
}

/** `GET /v1/config`: the plans and prices for a pricing page (no token needed). */
export async function getConfig(client: TollgateClient): Promise<Config> {
  const { data, response } = await client.GET("/v1/config");
  if (data === undefined) {
    // The document declares no error for this endpoint: anything else is unexpected.
    throw new Error(`GET /v1/config answered ${response.status}`);
  }
  return data;
}

/** The prices of a plan, for a pricing page: `[interval, "$9.00"]`. */
export function pricesOf(config: Config, planId: string): Array<[Interval, string]> {
  const plan = config.plans.find((p) => p.id === planId);
  if (plan === undefined) {
    return [];
  }
  return plan.prices.map((price) => [
    price.interval,
    `${(price.amount / 100).toFixed(2)} ${price.currency.toUpperCase()}`,
  ]);
}

/**
 * `POST /v1/checkout`: starts a Stripe Checkout and answers the URL to send the browser to.
 * `success_url` should carry `{CHECKOUT_SESSION_ID}` for {@link verifyCheckout}.
 */
export async function startCheckout(
  client: TollgateClient,
  plan: string,
  interval: Interval,
  successUrl?: string,
  cancelUrl?: string,
): Promise<string> {
  const { data, error, response } = await client.POST("/v1/checkout", {
    body: { plan, interval, success_url: successUrl, cancel_url: cancelUrl, quantity: 1 },
  });
  if (error !== undefined) {
    throw new TollgateError(response.status, error);
  }
  const sessionId: string = data.session_id;
  if (!sessionId.startsWith("cs_")) {
    throw new Error(`unexpected Checkout Session id ${sessionId}`);
  }
  return data.url;
}

/** `GET /v1/checkout/verify`: on the success page, activates at once and answers the status. */
export async function verifyCheckout(client: TollgateClient, sessionId: string): Promise<Status> {
  const { data, error, response } = await client.GET("/v1/checkout/verify", {
    params: { query: { session_id: sessionId } },
  });
  if (error !== undefined) {
    throw new TollgateError(response.status, error);
  }
  return data;
}

/** `GET /v1/status`: the caller's plan and access (in a tenant with `tenantId`). */
export async function getStatus(client: TollgateClient, tenantId?: string): Promise<Status> {
  const { data, error, response } = await client.GET("/v1/status", {
    params: { query: tenantId === undefined ? {} : { tenant_id: tenantId } },
  });
  if (error !== undefined) {
    throw new TollgateError(response.status, error);
  }
  return data;
}

/** One line for an account page, reading the status by name. */
export function describeStatus(status: Status): string {
  const reason: Reason = status.reason;
  const parts = [`${status.plan_name} (${status.plan})`, status.access ? "access" : "no access", reason];
  if (status.cancel_at_period_end && status.current_period_end !== null) {
    parts.push(`ends ${status.current_period_end}`);
  }
  if (status.grace_until !== null && status.grace_until !== undefined) {
    parts.push(`pay before ${status.grace_until}`);
  }
  for (const quota of status.quotas) {
    parts.push(`${quota.key}: ${quota.remaining ?? "unlimited"} left`);
  }
  return parts.join(", ");
}

function isVerdict(body: Status | FeatureVerdict): body is FeatureVerdict {
  return "allowed" in body;
}

/**
 * `GET /v1/entitlements?feature=...` (a service token with `billing:read`): may this user use
 * this feature? `reason` says why (`active`, `not_in_plan`, `unknown_feature`, ...).
 */
export async function checkFeature(
  client: TollgateClient,
  userId: string,
  feature: string,
  tenantId?: string,
): Promise<{ allowed: boolean; reason: string; plan: string }> {
  const { data, error, response } = await client.GET("/v1/entitlements", {
    params: { query: { user_id: userId, feature, tenant_id: tenantId } },
  });
  if (error !== undefined) {
    throw new TollgateError(response.status, error);
  }
  if (!isVerdict(data)) {
    throw new Error("GET /v1/entitlements with `feature` answered a status, not a verdict");
  }
  return { allowed: data.allowed, reason: data.reason, plan: data.plan };
}

/** `GET /v1/entitlements` without `feature`: the user's whole status, as `GET /v1/status`. */
export async function getEntitlements(
  client: TollgateClient,
  userId: string,
  tenantId?: string,
  members?: number,
): Promise<Status> {
  const { data, error, response } = await client.GET("/v1/entitlements", {
    params: { query: { user_id: userId, tenant_id: tenantId, members } },
  });
  if (error !== undefined) {
    throw new TollgateError(response.status, error);
  }
  if (isVerdict(data)) {
    throw new Error("GET /v1/entitlements without `feature` answered a verdict, not a status");
  }
  return data;
}

/** The whole flow once, as an app and a service would run it. */
export async function example(baseUrl: string, userJwt: string, serviceJwt: string): Promise<void> {
  const app = createTollgateClient(baseUrl, () => userJwt);
  const config = await getConfig(app);
  if (config.saas && config.stripe_configured) {
    console.log(pricesOf(config, "pro"));
    try {
      const url = await startCheckout(
        app,
        "pro",
        "month",
        "https://app.example.com/billing/success?session_id={CHECKOUT_SESSION_ID}",
        "https://app.example.com/pricing",
      );
      console.log(`redirect to ${url}`);
      console.log(describeStatus(await verifyCheckout(app, "cs_test_a1b2c3")));
    } catch (e) {
      // Already subscribed: change the plan in the portal or with /v1/subscription/change.
      if (!(e instanceof TollgateError && e.code === "subscription_exists")) {
        throw e;
      }
    }
  }
  console.log(describeStatus(await getStatus(app)));

  const service = createTollgateClient(baseUrl, () => serviceJwt);
  const verdict = await checkFeature(service, "user_2NNEqL2nrIRdJ194ndJqAHwEfxC", "pro");
  console.log(`pro: ${verdict.allowed} (${verdict.reason}, plan ${verdict.plan})`);
  const status = await getEntitlements(service, "user_2NNEqL2nrIRdJ194ndJqAHwEfxC");
  console.log(`seats: ${status.seats?.used ?? "?"} of ${status.seats?.allowed ?? "unlimited"}`);
}
