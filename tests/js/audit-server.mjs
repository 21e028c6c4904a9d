// graphql-http's server audits (the GraphQL-over-HTTP spec's reference suite) against one URL.
// Usage: node audit-server.mjs http://127.0.0.1:8000/graphql/
// Prints one JSON array on stdout: {id, name, status, reason?, response?} per audit, where
// status is "ok", or "error" (a MUST failed), "warn" (a SHOULD) or "notice" (a MAY).
import { auditServer } from 'graphql-http';

const url = process.argv[2];
if (!url) {
  console.error('usage: node audit-server.mjs <graphql endpoint URL>');
  process.exit(2);
}

async function describe(response) {
  let body = null;
  try {
    body = (await response.text()).slice(0, 500);
  } catch {
    // the audit has read the body already
  }
  return { status: response.status, contentType: response.headers.get('content-type'), body };
}

const results = await auditServer({ url });
const report = await Promise.all(
  results.map(async ({ id, name, status, reason, response }) =>
    status === 'ok' ? { id, name, status } : { id, name, status, reason, response: await describe(response) },
  ),
);
process.stdout.write(`${JSON.stringify(report)}\n`);
