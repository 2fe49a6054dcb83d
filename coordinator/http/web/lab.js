// The lab's API key: kept in this tab's session storage, sent only as a header.
import { getJSON } from "./common.js";

const KEY = "foldnet.labKey";

export function labKey() {
  return sessionStorage.getItem(KEY);
}

export function setLabKey(k) {
  if (k) sessionStorage.setItem(KEY, k);
  else sessionStorage.removeItem(KEY);
}

export function auth() {
  return { Authorization: `Bearer ${labKey()}` };
}

export function labJSON(url, options = {}) {
  return getJSON(url, { ...options, headers: { ...(options.headers || {}), ...auth() } });
}

export function keyError(e) {
  if (e.status === 401 || e.status === 403) {
    return `This API key is not valid (${e.message}). The operator creates lab keys with 'foldnet lab add NAME'.`;
  }
  return e.message;
}
