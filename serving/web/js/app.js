// The web player's entry point: sign-in, the two feeds, the tool panels and the debug overlay.

import { Api } from "./api.js";
import { EventQueue } from "./events.js";
import { FeedView } from "./feed.js";
import { commentsPanel, el, notificationsPanel, Panel, searchPanel, uploadPanel } from "./panels.js";
import { Playback } from "./player.js";

const DEBUG_KEY = "reelrank.debug";
const NOTIFICATIONS_EVERY_MS = 30_000;
const $ = (id) => document.getElementById(id);

const api = new Api();
const events = new EventQueue(api);
let toastTimer = null;

function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.classList.add("show");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => t.classList.remove("show"), 3500);
}

const panel = new Panel(toast);
const badge = {
  set(n) {
    const b = $("unread-badge");
    b.textContent = String(n);
    b.hidden = !n;
  },
};

const debugOn = () => document.body.classList.contains("debug-on");

// --- the buttons on each slide ------------------------------------------------------------

const actions = {
  wire(slide, item) {
    const like = slide.querySelector(".like");
    like.addEventListener("click", async () => {
      like.dataset.touched = "true"; // the answer below wins over a slower user_interaction
      const liked = like.getAttribute("aria-pressed") === "true";
      try {
        const r = liked ? await api.del(`/videos/${item.video_id}/like`)
          : await api.post(`/videos/${item.video_id}/like`);
        like.setAttribute("aria-pressed", String(r.liked));
        slide.querySelector(".likes").textContent = r.total_likes;
      } catch (e) { toast(e.message); }
    });
    const follow = slide.querySelector(".follow");
    follow.addEventListener("click", async () => {
      const following = follow.classList.contains("on");
      try {
        const r = following ? await api.del(`/users/${item.user.user_id}/follow`)
          : await api.post(`/users/${item.user.user_id}/follow`);
        for (const b of document.querySelectorAll(`.slide[data-creator="${item.user.user_id}"] .follow`)) {
          b.classList.toggle("on", r.is_following);
          b.textContent = r.is_following ? "Following" : "Follow";
        }
      } catch (e) { toast(e.message); }
    });
    slide.dataset.creator = String(item.user.user_id);
    slide.querySelector(".comments").addEventListener("click", () => commentsPanel(api, panel, item, () => {
      const n = slide.querySelector(".ncomments");
      n.textContent = Number(n.textContent) + 1;
    }));
    slide.querySelector(".sound").addEventListener("click", () => toggleSound());
  },
  /** A slide on screen for the first time: whether the viewer already likes it (the feed
   * items do not say; ``GET /videos/{id}`` does, as ``user_interaction``). */
  async shown(slide, item) {
    if (slide.dataset.interaction) return;
    slide.dataset.interaction = "asked";
    try {
      const v = await api.get(`/videos/${item.video_id}`);
      const like = slide.querySelector(".like");
      if (like.dataset.touched !== "true") like.setAttribute("aria-pressed", String(v.user_interaction.liked));
      slide.dataset.interaction = "known";
    } catch { delete slide.dataset.interaction; } // try again next time it is shown
  },
};

function toggleSound() {
  const muted = !document.body.classList.toggle("sound-on");
  for (const v of document.querySelectorAll(".slide video")) v.muted = muted;
}

// --- feeds and tabs -----------------------------------------------------------------------

const ctx = { api, events, actions, toast, debug: debugOn };
const feeds = {
  "for-you": new FeedView($("feed-for-you"), { ...ctx, path: "/feed/for-you",
    emptyText: "Nothing to show yet: the catalog is empty." }),
  following: new FeedView($("feed-following"), { ...ctx, path: "/feed/following",
    emptyText: "No videos from creators you follow yet. Follow someone from a video or a search." }),
};
let tab = "for-you";

function showTab(name) {
  feeds[tab].stop();
  tab = name;
  for (const b of document.querySelectorAll("[data-tab]")) b.classList.toggle("on", b.dataset.tab === name);
  for (const [n, f] of Object.entries(feeds)) f.root.hidden = n !== name;
  if (name === "following") feeds.following.reload(); // always the newest
  else feeds[name].start();
  feeds[name].root.focus();
}

function setDebug(on) {
  document.body.classList.toggle("debug-on", on);
  $("toggle-debug").classList.toggle("on", on);
  sessionStorage.setItem(DEBUG_KEY, on ? "1" : "");
  // Scores and experiment arms come only with ?debug=true: take a fresh list that has them.
  if (on && tab === "for-you" && feeds[tab].items.some((i) => !i.debug)) feeds[tab].reload();
}

function playInPanel(v) {
  const video = el("video", { controls: true, playsInline: true, muted: true, poster: v.thumbnail_url || "" });
  video.style.width = "100%";
  panel.open(v.title, video, el("p", { className: "sub", textContent: `@${v.user.username}` }));
  events.view(v); // a search result played: a view without a feed list
  if (v.video_urls && v.video_urls.hls) {
    const p = new Playback(video, v.video_urls.hls);
    p.play();
    panel.onClose = () => p.destroy();
  }
}

async function refreshBadge() {
  if (!api.hasSession) return;
  try {
    badge.set((await api.get("/notifications", { page_size: 1, unread_only: "true" })).unread_count);
  } catch { /* shown when opened */ }
}

// --- sign-in ------------------------------------------------------------------------------

function showAuth() {
  for (const f of Object.values(feeds)) f.stop();
  $("main").hidden = true;
  $("auth").hidden = false;
}

async function showMain() {
  $("auth").hidden = true;
  $("main").hidden = false;
  try {
    $("logout").title = `Signed in as @${(await api.get("/users/me")).username}: log out`;
  } catch (e) {
    if (!api.hasSession) return; // the refresh token was refused: back to the sign-in form
    toast(e.message);
  }
  refreshBadge();
  await feeds[tab].start();
  feeds[tab].root.focus();
}

function wireAuth() {
  const form = $("auth-form");
  let mode = "login";
  const setMode = (m) => {
    mode = m;
    $("auth").classList.toggle("login", m === "login");
    for (const b of form.querySelectorAll("[data-mode]")) b.classList.toggle("on", b.dataset.mode === m);
    $("auth-submit").textContent = m === "login" ? "Log in" : "Sign up";
    form.email.required = m === "signup";
  };
  for (const b of form.querySelectorAll("[data-mode]")) b.addEventListener("click", () => setMode(b.dataset.mode));
  setMode("login");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    $("auth-error").textContent = "";
    try {
      if (mode === "signup") await api.register(form.username.value, form.email.value, form.password.value);
      else await api.login(form.username.value, form.password.value);
      form.password.value = "";
      await showMain();
    } catch (err) {
      $("auth-error").textContent = err.message;
    }
  });
}

// --- start --------------------------------------------------------------------------------

function main() {
  wireAuth();
  api.onSignedOut = showAuth;
  for (const b of document.querySelectorAll("[data-tab]")) b.addEventListener("click", () => showTab(b.dataset.tab));
  $("open-search").addEventListener("click", () => searchPanel(api, panel, playInPanel));
  $("open-upload").addEventListener("click", () => uploadPanel(api, panel));
  $("open-notifications").addEventListener("click", () => notificationsPanel(api, panel, badge));
  $("toggle-debug").addEventListener("click", () => setDebug(!debugOn()));
  $("logout").addEventListener("click", () => api.logout().catch((e) => toast(e.message)));
  document.addEventListener("keydown", (e) => {
    if (e.target.closest("input, textarea, select")) return;
    if (e.key === "d") setDebug(!debugOn());
    else if (e.key === "m") toggleSound();
    else if (e.key === "/") { e.preventDefault(); searchPanel(api, panel, playInPanel); }
    else if (e.key === "Escape") panel.close();
  });
  setInterval(refreshBadge, NOTIFICATIONS_EVERY_MS);
  // Hidden (another app, tab closed): stop and report the current watch now, not never.
  document.addEventListener("visibilitychange", () => {
    if ($("main").hidden) return;
    if (document.visibilityState === "hidden") {
      feeds[tab].stop();
      events.flush(true);
    } else {
      feeds[tab].start();
    }
  });
  document.body.classList.toggle("debug-on", Boolean(sessionStorage.getItem(DEBUG_KEY)));
  $("toggle-debug").classList.toggle("on", debugOn());
  if (api.hasSession) showMain(); else showAuth();
  window.reelrank = { api, events, feeds, setDebug, refreshBadge }; // for the console and the browser tests
}

main();
