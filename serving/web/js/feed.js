// A vertical feed (for you, following): cursor pages of videos, one full-height slide each,
// snapped by CSS scroll snapping (touch swipe, wheel, or the arrow keys). The slide on screen
// plays; the next one is preloaded; slides further than KEEP away release their players.

import { Playback, WatchClock } from "./player.js";

const PAGE_SIZE = 10;
const PREFETCH_LEFT = 3; // fetch the next page when this few slides are left
const KEEP = 2; // players kept alive either side of the current slide

export function debugText(item) {
  const d = item.debug;
  const lines = [`video ${item.video_id}  source ${item.source ?? "?"}  position ${item.position ?? "?"}`];
  if (d) {
    lines.push(`score ${d.score === null ? "-" : d.score.toFixed(4)}  model ${d.model_version}`);
    const arms = d.arms.length ? d.arms.map((a) => `${a.experiment}=${a.variant}`).join(", ")
      : "none (production)";
    lines.push(`experiment ${arms}`);
    if (d.degraded.length) lines.push(`degraded ${d.degraded.join(",")}`);
  } else if (item.model_version) {
    lines.push(`model ${item.model_version}`);
  }
  if (item.request_id) lines.push(`list ${item.request_id.slice(0, 12)}`);
  return lines.join("\n");
}

export class FeedView {
  /**
   * @param {HTMLElement} root the scroll container
   * @param {object} ctx {api, events, actions, path, emptyText, debug: () => bool}
   */
  constructor(root, ctx) {
    this.root = root;
    this.ctx = ctx;
    this.items = [];
    this.slides = [];
    this.players = new Map(); // index -> Playback
    this.clocks = [];
    this.current = -1;
    this.resumeAt = -1;
    this.cursor = null;
    this.more = true;
    this.loading = null;
    this.template = document.getElementById("slide-template");
    this.observer = new IntersectionObserver((entries) => {
      for (const e of entries) {
        if (e.isIntersecting && e.intersectionRatio >= 0.6) this.activate(Number(e.target.dataset.index));
      }
    }, { root, threshold: [0.6] });
    root.tabIndex = 0;
    root.addEventListener("keydown", (e) => {
      if (e.key === "ArrowDown" || e.key === "j") { e.preventDefault(); this.go(1); }
      if (e.key === "ArrowUp" || e.key === "k") { e.preventDefault(); this.go(-1); }
    });
  }

  /** Drop everything and load a fresh first page (a new ranking). */
  async reload() {
    this.leave();
    for (const p of this.players.values()) p.destroy();
    this.players.clear();
    this.observer.disconnect();
    this.root.replaceChildren();
    Object.assign(this, { items: [], slides: [], clocks: [], current: -1, resumeAt: -1,
      cursor: null, more: true });
    await this.nextPage();
  }

  async start() {
    if (!this.items.length) await this.nextPage();
    else if (this.current < 0 && this.resumeAt >= 0) this.activate(this.resumeAt);
  }

  /** Another tab is shown: the current video stops (and reports its watch time). */
  stop() {
    this.leave();
    if (this.current >= 0) this.resumeAt = this.current;
    this.current = -1;
  }

  nextPage() {
    if (!this.more) return Promise.resolve();
    if (!this.loading) {
      const query = { page_size: PAGE_SIZE, cursor: this.cursor };
      if (this.ctx.debug() && !this.debugRefused) query.debug = "true";
      this.loading = this.ctx.api.get(this.ctx.path, query).then((page) => {
        this.cursor = page.next_cursor;
        this.more = Boolean(page.has_more && page.next_cursor);
        for (const item of page.videos) this.add(item);
        if (!this.items.length) this.showEmpty();
      }).catch((e) => {
        if (e.status === 400 && this.cursor) { // the cached list expired: rank a fresh one
          this.cursor = null;
          this.loading = null;
          return this.nextPage();
        }
        if (e.status === 403 && query.debug) { // the overlay is for staff: the plain feed
          this.ctx.toast(`No debug overlay: ${e.message}`);
          this.debugRefused = true;
          this.loading = null;
          return this.nextPage();
        }
        this.ctx.toast(`Could not load the feed: ${e.message}`);
        return undefined;
      }).finally(() => { this.loading = null; });
    }
    return this.loading;
  }

  showEmpty() {
    const p = document.createElement("p");
    p.className = "empty";
    p.textContent = this.ctx.emptyText;
    this.root.replaceChildren(p);
  }

  add(item) {
    const index = this.items.length;
    const slide = this.template.content.firstElementChild.cloneNode(true);
    slide.dataset.index = String(index);
    slide.dataset.videoId = String(item.video_id);
    const video = slide.querySelector("video");
    const poster = slide.querySelector(".poster");
    if (item.thumbnail_url) {
      poster.src = item.thumbnail_url; // the poster first, before any video byte
      poster.alt = item.title;
      video.poster = item.thumbnail_url;
    } else {
      poster.hidden = true;
    }
    if (!item.video_urls || !item.video_urls.hls) slide.querySelector(".no-media").hidden = false;
    video.addEventListener("playing", () => slide.classList.add("playing"));
    slide.querySelector(".username").textContent = `@${item.user.username}`;
    slide.querySelector(".title").textContent = item.title;
    slide.querySelector(".likes").textContent = item.stats.likes;
    slide.querySelector(".ncomments").textContent = item.stats.comments;
    slide.querySelector(".debug").textContent = debugText(item);
    this.ctx.actions.wire(slide, item);
    slide.addEventListener("click", (e) => {
      if (e.target.closest("button")) return;
      if (video.paused) this.players.get(index)?.play(); else video.pause();
    });
    this.items.push(item);
    this.slides.push(slide);
    this.clocks.push(new WatchClock(video));
    this.root.append(slide);
    this.observer.observe(slide);
  }

  player(index) {
    const item = this.items[index];
    if (!item || !item.video_urls || !item.video_urls.hls) return null;
    if (!this.players.has(index)) {
      this.players.set(index, new Playback(this.slides[index].querySelector("video"), item.video_urls.hls));
    }
    return this.players.get(index);
  }

  /** The video that was on screen left it: report how long it played. */
  leave() {
    const i = this.current;
    if (i < 0 || !this.items[i]) return;
    this.players.get(i)?.pause();
    this.ctx.events.left(this.items[i], this.clocks[i].take());
  }

  activate(index) {
    if (index === this.current || this.root.hidden) return;
    this.leave();
    this.current = index;
    this.root.dataset.current = String(index);
    const item = this.items[index];
    this.ctx.events.view(item);
    this.ctx.actions.shown?.(this.slides[index], item);
    this.player(index)?.play();
    this.player(index + 1)?.load(); // the next one is ready before the swipe
    for (const [i, p] of this.players) {
      if (Math.abs(i - index) > KEEP) { p.destroy(); this.players.delete(i); }
    }
    if (this.items.length - index <= PREFETCH_LEFT) this.nextPage();
  }

  /** Swipe by ``step`` slides (keyboard, buttons, tests). */
  go(step) {
    const target = this.slides[Math.max(0, Math.min(this.slides.length - 1, this.current + step))];
    if (target) target.scrollIntoView({ behavior: "smooth", block: "start" });
  }

  currentItem() { return this.items[this.current]; }
}
