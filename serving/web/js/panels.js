// The side panel's contents: search, upload (with progress), notifications, comments.

const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
};

export class Panel {
  constructor(toast) {
    this.root = document.getElementById("panel");
    this.title = document.getElementById("panel-title");
    this.body = document.getElementById("panel-body");
    this.toast = toast;
    this.onClose = null;
    document.getElementById("panel-close").addEventListener("click", () => this.close());
  }

  open(title, ...content) {
    this.close();
    this.title.textContent = title;
    this.body.replaceChildren(...content);
    this.root.hidden = false;
  }

  close() {
    if (this.root.hidden) return;
    this.root.hidden = true;
    this.body.replaceChildren();
    if (this.onClose) this.onClose();
    this.onClose = null;
  }
}

function videoRow(v, onPick) {
  const li = el("li", { className: "result" },
    el("img", { src: v.thumbnail_url || "", alt: "" }),
    el("div", {}, el("div", { className: "title", textContent: v.title }),
      el("div", { className: "sub", textContent: `@${v.user.username} · ${v.stats.views} views · ${v.stats.likes} likes` })));
  li.dataset.videoId = String(v.video_id);
  li.addEventListener("click", () => onPick(v));
  return li;
}

/** Search videos and creators; a video picked plays in the panel. */
export function searchPanel(api, panel, play) {
  const q = el("input", { name: "q", type: "search", placeholder: "Search videos and creators",
    maxLength: 200, required: true });
  const sort = el("select", { name: "sort" }, ...["relevance", "views", "recent"].map(
    (s) => el("option", { value: s, textContent: s })));
  const status = el("p", { className: "sub" });
  const videos = el("ul", { className: "list", id: "search-videos" });
  const users = el("ul", { className: "list", id: "search-users" });
  const form = el("form", { id: "search-form" }, q, sort, el("button", { type: "submit", textContent: "Search" }));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    status.textContent = "Searching…";
    try {
      const [vp, up] = await Promise.all([
        api.get("/search/videos", { q: q.value, sort: sort.value, page_size: 20 }),
        api.get("/search/users", { q: q.value, page_size: 5 }),
      ]);
      status.textContent = `${vp.total_results} videos`;
      videos.replaceChildren(...vp.videos.map((v) => videoRow(v, play)));
      users.replaceChildren(...up.users.map((u) => {
        const follow = el("button", { textContent: "Follow" });
        follow.addEventListener("click", async () => {
          const r = await api.post(`/users/${u.user_id}/follow`).catch((err) => panel.toast(err.message));
          if (r) follow.textContent = "Following";
        });
        return el("li", {}, el("div", {}, el("b", { textContent: `@${u.username}` }),
          el("div", { className: "sub", textContent: `${u.followers} followers` })), follow);
      }));
    } catch (err) {
      status.textContent = err.message;
    }
  });
  panel.open("Search", form, status, el("h3", { textContent: "Creators" }), users,
    el("h3", { textContent: "Videos" }), videos);
  q.focus();
}

/** PUT a file to a pre-signed URL, reporting progress (fetch has no upload progress). */
function putWithProgress(url, file, contentType, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", url);
    xhr.setRequestHeader("Content-Type", contentType);
    xhr.upload.addEventListener("progress", (e) => { if (e.lengthComputable) onProgress(e.loaded, e.total); });
    xhr.addEventListener("load", () => (xhr.status < 300 ? resolve()
      : reject(new Error(`upload refused (${xhr.status}): ${xhr.responseText.slice(0, 200)}`))));
    xhr.addEventListener("error", () => reject(new Error("upload failed: network error")));
    xhr.send(file);
  });
}

/** Upload: create the video, PUT the file to its pre-signed URL, complete, follow the status. */
export function uploadPanel(api, panel) {
  const file = el("input", { type: "file", name: "file", accept: "video/*", required: true });
  const title = el("input", { name: "title", required: true, maxLength: 200, placeholder: "Title" });
  const description = el("textarea", { name: "description", maxLength: 5000, placeholder: "Description #tags" });
  const visibility = el("select", { name: "visibility" }, ...["public", "followers", "private"].map(
    (s) => el("option", { value: s, textContent: s })));
  const bar = el("progress", { max: 100, value: 0, id: "upload-progress" });
  const status = el("p", { className: "sub", id: "upload-status" });
  const submit = el("button", { type: "submit", textContent: "Upload" });
  const form = el("form", { id: "upload-form" }, file, title, description, visibility, submit, bar, status);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = file.files[0];
    if (!f) return;
    submit.disabled = true;
    try {
      const contentType = f.type || "video/mp4";
      if (f.size > 0) status.textContent = `Uploading ${(f.size / 1e6).toFixed(1)} MB…`;
      const ticket = await api.post("/videos/upload", { title: title.value,
        description: description.value, visibility: visibility.value, content_type: contentType });
      if (f.size > ticket.max_bytes) throw new Error(`the file is over ${ticket.max_bytes} bytes`);
      await putWithProgress(ticket.upload_url, f, ticket.content_type, (done, total) => {
        bar.value = Math.round((100 * done) / total);
        status.textContent = `Uploading… ${bar.value}%`;
      });
      bar.value = 100;
      const done = await api.post(`/videos/${ticket.video_id}/complete`);
      status.textContent = `Uploaded: video ${done.video_id} is ${done.status}`;
      follow(api, ticket.video_id, status);
    } catch (err) {
      status.textContent = err.message;
    } finally {
      submit.disabled = false;
    }
  });
  panel.open("Upload", form);
}

/** Poll the video's status until the transcoder has decided (or two minutes pass). */
async function follow(api, videoId, status) {
  for (let i = 0; i < 60 && status.isConnected; i++) {
    await new Promise((r) => setTimeout(r, 2000));
    const v = await api.get(`/videos/${videoId}`).catch(() => null);
    if (!v) continue;
    if (v.status !== "processing") {
      status.textContent = v.status === "ready" ? `Video ${videoId} is ready (moderation: ${v.moderation})`
        : `Video ${videoId} failed: ${v.failure_reason || "unknown reason"}`;
      return;
    }
  }
}

/** Notifications; opening them marks them read. */
export async function notificationsPanel(api, panel, badge) {
  const list = el("ul", { className: "list", id: "notifications" });
  panel.open("Notifications", list);
  try {
    const page = await api.get("/notifications", { page_size: 30 });
    list.replaceChildren(...page.notifications.map((n) => el("li", { className: n.read ? "" : "unread" },
      el("div", {}, el("div", { textContent: n.message }),
        el("div", { className: "sub", textContent: new Date(n.updated_at).toLocaleString() })))));
    if (!page.notifications.length) list.append(el("li", { textContent: "Nothing yet." }));
    if (page.unread_count) {
      const r = await api.post("/notifications/read", { all: true });
      badge.set(r.unread_count);
    }
  } catch (err) {
    list.replaceChildren(el("li", { textContent: err.message }));
  }
}

function commentRow(c) {
  const who = c.user ? `@${c.user.username}` : "[deleted]";
  const li = el("li", { className: c.depth > 0 ? "reply" : "" },
    el("div", {}, el("b", { textContent: who }), el("div", { textContent: c.deleted ? "[deleted]" : c.content })));
  return [li, ...(c.replies || []).flatMap(commentRow)];
}

/** A video's comment threads and a box to add one. */
export async function commentsPanel(api, panel, item, onPosted) {
  const list = el("ul", { className: "list", id: "comments" });
  const box = el("input", { name: "content", required: true, maxLength: 2000, placeholder: "Add a comment" });
  const form = el("form", { id: "comment-form" }, box, el("button", { type: "submit", textContent: "Post" }));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const c = await api.post(`/videos/${item.video_id}/comments`, { content: box.value });
      box.value = "";
      list.prepend(...commentRow(c));
      onPosted();
    } catch (err) {
      panel.toast(err.message);
    }
  });
  panel.open(`Comments · ${item.title}`, form, list);
  try {
    const page = await api.get(`/videos/${item.video_id}/comments`, { page_size: 20 });
    list.append(...page.comments.flatMap(commentRow));
  } catch (err) {
    list.append(el("li", { textContent: err.message }));
  }
}

export { el };
