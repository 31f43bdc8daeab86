// Reads [{secret, body, headers}] as JSON on stdin; prints [{ok, type | error}] on stdout.
// Each body is verified with the reference library, as a receiver written in JS would.
const { Webhook } = require("standardwebhooks");

let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const results = JSON.parse(input).map(({ secret, body, headers }) => {
    try {
      const payload = new Webhook(secret).verify(body, headers);
      return { ok: true, type: payload.type };
    } catch (err) {
      return { ok: false, error: String(err && err.message) };
    }
  });
  process.stdout.write(JSON.stringify(results) + "\n");
});
