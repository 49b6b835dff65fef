/*
 * Plain-JS variant of the Step 1 provider (no React, no bundler needed).
 *
 * Load posthog-js first (from your own origin, e.g. node_modules/posthog-js/dist/array.full.js,
 * which defines window.posthog), then this file, then call:
 *
 *   initAutoplayPostHog(window.posthog, {
 *     key: "phc_...",                      // PostHog project key, or the receiver's capture token
 *     apiHost: "https://us.i.posthog.com", // "Through PostHog" route
 *     // apiHost: "https://receiver.internal.example", // "Direct, on-prem" route: the receiver
 *     userId: "USER_ID_FROM_YOUR_AUTH",    // the SAME id the chat widget sends as customData.userId
 *     email: "user@theirdomain.com",
 *     productId: "YOUR_AUTOPLAY_PRODUCT_ID",
 *     options: {},                         // any other posthog.init options (persistence, ...);
 *                                          // Step 1's own settings below always win
 *   });
 *
 * What it does is exactly Step 1 of the tutorial: person_profiles "identified_only", a 120 s idle
 * timeout, and, once posthog-js has loaded, identify(userId, {email, product_id}) plus
 * register({email}) so that every autocapture event carries the email.
 * One addition: if this browser was identified as a different user before (persistence survives
 * page loads), reset() first, so two users never share a distinct_id or a session.
 *
 * Works as a classic <script> (defines window.initAutoplayPostHog) and as a CommonJS module.
 */
(function (root, factory) {
  var api = factory();
  if (typeof module === "object" && module.exports) {
    module.exports = api;
  }
  if (root) {
    root.initAutoplayPostHog = api.initAutoplayPostHog;
    root.buildAutoplayPostHogConfig = api.buildAutoplayPostHogConfig;
  }
})(typeof window !== "undefined" ? window : null, function () {
  "use strict";

  function identifyUser(ph, opts) {
    if (!opts.userId) return;
    var state = typeof ph.get_property === "function" ? ph.get_property("$user_state") : null;
    if (state === "identified" && ph.get_distinct_id() !== String(opts.userId)) {
      ph.reset();
    }
    var personProps = {};
    if (opts.email) personProps.email = opts.email;
    if (opts.productId) personProps.product_id = opts.productId;
    ph.identify(String(opts.userId), personProps);
    // Critical: makes email flow on every autocapture event.
    if (opts.email) ph.register({ email: opts.email });
  }

  function buildAutoplayPostHogConfig(opts) {
    if (!opts || !opts.apiHost) throw new Error("initAutoplayPostHog: apiHost is required");
    var config = {};
    var extra = opts.options || {};
    for (var k in extra) {
      if (Object.prototype.hasOwnProperty.call(extra, k)) config[k] = extra[k];
    }
    // Step 1's settings win over `options`: the connector relies on them.
    config.api_host = String(opts.apiHost).replace(/\/+$/, "");
    config.person_profiles = "identified_only";
    config.session_idle_timeout_seconds = 120;
    var userLoaded = extra.loaded;
    config.loaded = function (ph) {
      identifyUser(ph, opts);
      if (typeof userLoaded === "function") userLoaded(ph);
    };
    return config;
  }

  function initAutoplayPostHog(posthog, opts) {
    if (!posthog || typeof posthog.init !== "function") {
      throw new Error("initAutoplayPostHog: load posthog-js before calling this");
    }
    if (!opts || !opts.key) throw new Error("initAutoplayPostHog: key is required");
    if (/^phx_/.test(opts.key)) {
      throw new Error("initAutoplayPostHog: phx_ is a personal key; use the phc_ project key");
    }
    if (posthog.__loaded) {
      // Already initialised on this page (e.g. a second call): only (re)identify.
      identifyUser(posthog, opts);
      return posthog;
    }
    posthog.init(opts.key, buildAutoplayPostHogConfig(opts));
    return posthog;
  }

  return {
    initAutoplayPostHog: initAutoplayPostHog,
    buildAutoplayPostHogConfig: buildAutoplayPostHogConfig,
  };
});
