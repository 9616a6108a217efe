// HLS playback: hls.js where Media Source Extensions exist, the browser's own HLS otherwise
// (Safari, iOS). One Playback per <video>; "preload" loads the manifest and the first
// segments without playing, so the next video starts at once when swiped to.

const HLS_CONFIG = {
  maxBufferLength: 12, // seconds ahead: short videos, and swiping is frequent
  maxMaxBufferLength: 30,
  capLevelToPlayerSize: true, // no 1080p into a 400 px tall slide
  startLevel: -1,
};

export class Playback {
  constructor(video, url) {
    this.video = video;
    this.url = url;
    this.hls = null;
    this.loaded = false;
    this.failed = null;
  }

  /** Start fetching (manifest, then segments up to the buffer goal); does not play. */
  load() {
    if (this.loaded) return this;
    this.loaded = true;
    const video = this.video;
    video.preload = "auto";
    const Hls = window.Hls;
    if (Hls && Hls.isSupported()) {
      this.hls = new Hls(HLS_CONFIG);
      this.hls.on(Hls.Events.ERROR, (_, data) => {
        if (!data.fatal) return;
        if (data.type === Hls.ErrorTypes.MEDIA_ERROR) this.hls.recoverMediaError();
        else this.failed = data.details;
      });
      this.hls.loadSource(this.url);
      this.hls.attachMedia(video);
    } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
      video.src = this.url;
    } else {
      this.failed = "this browser plays no HLS";
    }
    return this;
  }

  play() {
    this.load();
    const p = this.video.play();
    if (p) p.catch(() => {}); // autoplay refused: the poster stays, a tap plays
  }

  pause() { this.video.pause(); }

  /** Free the decoder and buffers (slides far from the current one). */
  destroy() {
    if (this.hls) this.hls.destroy();
    this.hls = null;
    this.video.removeAttribute("src");
    this.video.load();
    this.loaded = false;
  }
}

/** Accumulates the time a video actually played (loops included, stalls excluded). */
export class WatchClock {
  constructor(video) {
    this.ms = 0;
    this.since = null;
    video.addEventListener("playing", () => { this.since = performance.now(); });
    for (const ev of ["pause", "waiting", "ended", "emptied"]) {
      video.addEventListener(ev, () => this.stop());
    }
  }

  stop() {
    if (this.since !== null) this.ms += performance.now() - this.since;
    this.since = null;
  }

  /** The time played so far, and restart counting from zero. */
  take() {
    this.stop();
    const ms = Math.round(this.ms);
    this.ms = 0;
    return ms;
  }
}
