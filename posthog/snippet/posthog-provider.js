// app/posthog-provider.js  (or wherever your client-side init lives)
//
// Step 1 of the tutorial, with the host configurable so the same provider serves both routes:
//   - "Through PostHog":   NEXT_PUBLIC_POSTHOG_HOST=https://us.i.posthog.com
//                          NEXT_PUBLIC_POSTHOG_KEY=phc_...            (your PostHog project key)
//   - "Direct, on-prem":   NEXT_PUBLIC_POSTHOG_HOST=https://receiver.internal.example
//                          NEXT_PUBLIC_POSTHOG_KEY=<capture_token>   (`receiver product show`)
//     posthog-js then sends clicks straight to your receiver; nothing leaves your network.
//
// npm install posthog-js
// Mount once at the top of your app (app/layout.js in Next.js):
//   <PostHogProvider userId={user.id} email={user.email} productId="YOUR_AUTOPLAY_PRODUCT_ID">
// Use the SAME userId as the chat widget's customData.userId.
"use client";
import { useEffect } from "react";
import posthog from "posthog-js";

const POSTHOG_KEY = process.env.NEXT_PUBLIC_POSTHOG_KEY || "phc_YOUR_PROJECT_API_KEY";
const POSTHOG_HOST = process.env.NEXT_PUBLIC_POSTHOG_HOST || "https://us.i.posthog.com";

export default function PostHogProvider({
  children,
  userId,
  email,
  productId,
  apiKey = POSTHOG_KEY,
  apiHost = POSTHOG_HOST,
}) {
  useEffect(() => {
    if (typeof window === "undefined" || posthog.__loaded) return;
    posthog.init(apiKey, {
      api_host: apiHost,
      person_profiles: "identified_only",
      session_idle_timeout_seconds: 120,
      loaded: (ph) => {
        if (!userId) return;
        // A different user was identified in this browser before: start clean.
        if (ph.get_property("$user_state") === "identified" && ph.get_distinct_id() !== String(userId)) {
          ph.reset();
        }
        ph.identify(String(userId), { email, product_id: productId });
        // Critical: makes email flow on every autocapture event.
        // Without this, ActionsPayload.email arrives as None.
        ph.register({ email });
      },
    });
  }, [apiKey, apiHost, userId, email, productId]);
  return children;
}
