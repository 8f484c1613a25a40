// Following a job live over Server-Sent Events (GET /api/jobs/{id}/events).
import { events, getJSON } from "./api.js";

/**
 * handlers: {state(s), progress(view), sample({file, url}), end(job), error(message)}.
 * Returns a function that stops watching.
 */
export function watchJob(id, handlers) {
  const src = events(`/api/jobs/${encodeURIComponent(id)}/events`);
  let ended = false;
  const parse = (e) => { try { return JSON.parse(e.data); } catch { return {}; } };
  src.addEventListener("state", (e) => handlers.state && handlers.state(parse(e).state));
  src.addEventListener("progress", (e) => handlers.progress && handlers.progress(parse(e)));
  src.addEventListener("sample", (e) => handlers.sample && handlers.sample(parse(e)));
  src.addEventListener("end", (e) => {
    ended = true;
    src.close();
    handlers.end && handlers.end(parse(e));
  });
  src.onerror = async () => {
    if (ended) return;
    // The browser retries on its own; if the job is over (or gone), say so and stop.
    try {
      const job = await getJSON(`/api/jobs/${encodeURIComponent(id)}`);
      if (["succeeded", "failed", "cancelled"].includes(job.state)) {
        ended = true;
        src.close();
        handlers.end && handlers.end(job);
      }
    } catch (err) {
      ended = true;
      src.close();
      handlers.error && handlers.error(err);
    }
  };
  return () => { ended = true; src.close(); };
}
