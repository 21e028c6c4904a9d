// blogPublished through graphql-sse's reference client (distinct connections mode), as a
// front-end would use it: default retries, and a `Last-Event-ID` header carrying the last cursor
// seen, so a reconnect resumes with no gap and no duplicate (docs/http.md).
// Usage: node sse-subscribe.mjs <graphql URL> <author> [after-cursor]
// stdout: one JSON line per event {"cursor", "title"}; stderr: JSON status lines.
import { createClient } from 'graphql-sse';

const [url, author, after] = process.argv.slice(2);
if (!url || !author) {
  console.error('usage: node sse-subscribe.mjs <graphql URL> <author> [after-cursor]');
  process.exit(2);
}
const status = (fields) => process.stderr.write(`${JSON.stringify(fields)}\n`);

let lastCursor = after || null;
const client = createClient({
  url,
  headers: () => (lastCursor ? { 'Last-Event-ID': lastCursor } : {}),
  on: {
    connecting: (reconnecting) => status({ status: 'connecting', reconnecting }),
    connected: (reconnected) => status({ status: 'connected', reconnected }),
  },
});

const query = `subscription Follow($author: String, $after: String) {
  blogPublished(author: $author, after: $after) { cursor blog { title } }
}`;
try {
  for await (const result of client.iterate({ query, variables: { author, after: lastCursor } })) {
    if (result.errors) {
      status({ status: 'errors', errors: result.errors });
      continue;
    }
    const event = result.data.blogPublished;
    lastCursor = event.cursor;
    process.stdout.write(`${JSON.stringify({ cursor: event.cursor, title: event.blog.title })}\n`);
  }
  status({ status: 'complete' });
} catch (error) {
  status({ status: 'failed', error: String(error) });
  process.exitCode = 1;
}
