// blogPublished through Apollo Client's HttpLink: Apollo's multipart subscription protocol, no
// websocket. When the stream ends (a server going away, a dropped connection) it subscribes
// again with `after:` the last cursor seen, and misses nothing (docs/http.md).
// Usage: node apollo-subscribe.mjs <graphql URL> <author> [after-cursor]
// stdout: one JSON line per event {"cursor", "title"}; stderr: JSON status lines.
import { ApolloClient, HttpLink, InMemoryCache, gql } from '@apollo/client';

const [url, author, after] = process.argv.slice(2);
if (!url || !author) {
  console.error('usage: node apollo-subscribe.mjs <graphql URL> <author> [after-cursor]');
  process.exit(2);
}
const status = (fields) => process.stderr.write(`${JSON.stringify(fields)}\n`);

const client = new ApolloClient({ link: new HttpLink({ uri: url }), cache: new InMemoryCache() });
const FOLLOW = gql`
  subscription Follow($author: String, $after: String) {
    blogPublished(author: $author, after: $after) { cursor blog { title } }
  }
`;

let lastCursor = after || null;
let attempt = 0;

function subscribe() {
  status({ status: 'subscribing', after: lastCursor });
  client.subscribe({ query: FOLLOW, variables: { author, after: lastCursor }, fetchPolicy: 'no-cache' }).subscribe({
    next(result) {
      if (result.error) {
        const extensions = (result.error.errors || []).map((error) => error.extensions || {});
        status({ status: 'error', message: result.error.message, extensions });
        return;
      }
      attempt = 0;
      const event = result.data.blogPublished;
      lastCursor = event.cursor;
      process.stdout.write(`${JSON.stringify({ cursor: event.cursor, title: event.blog.title })}\n`);
    },
    error(error) {
      status({ status: 'error', message: String(error) });
      resubscribe();
    },
    complete() {
      status({ status: 'ended' });
      resubscribe();
    },
  });
}

function resubscribe() {
  attempt += 1;
  // Backoff with jitter, as after any lost connection.
  const delay = Math.min(5000, 250 * 2 ** Math.min(attempt, 5)) * (0.5 + Math.random() / 2);
  setTimeout(subscribe, delay);
}

subscribe();
