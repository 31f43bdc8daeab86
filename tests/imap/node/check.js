// Logs in over implicit TLS, lists folders, fetches every INBOX message; prints JSON.
// Usage: node check.js HOST PORT USER PASSWORD
const { ImapFlow } = require("imapflow");

async function main() {
  const [host, port, user, pass] = process.argv.slice(2);
  const client = new ImapFlow({
    host, port: Number(port), secure: true, auth: { user, pass },
    tls: { rejectUnauthorized: false }, logger: false,
  });
  await client.connect();
  const folders = (await client.list()).map((f) => ({ path: f.path, specialUse: f.specialUse || null }));
  const lock = await client.getMailboxLock("INBOX");
  const messages = [];
  try {
    for await (const msg of client.fetch("1:*", { envelope: true, source: true, uid: true })) {
      messages.push({ uid: msg.uid, subject: msg.envelope.subject, size: msg.source.length });
    }
  } finally {
    lock.release();
  }
  await client.logout();
  console.log(JSON.stringify({ folders, messages }));
}

main().catch((err) => { console.error(err); process.exit(1); });
