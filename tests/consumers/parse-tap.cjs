// Reads a TAP stream on stdin with node-tap's parser in strict mode and prints what it understood,
// as JSON: the version, the plan, every test point (with its YAML diagnostics) and the final result.
const { Parser } = require('tap-parser')

const seen = { version: null, asserts: [], comments: [], extra: [] }
const parser = new Parser({ strict: true }, (final) => {
  seen.final = final
  process.stdout.write(JSON.stringify(seen) + '\n')
})
parser.on('version', (version) => { seen.version = version })
parser.on('assert', (point) => { seen.asserts.push(point) })
parser.on('comment', (comment) => { seen.comments.push(comment) })
parser.on('extra', (extra) => { seen.extra.push(extra) })
process.stdin.pipe(parser)
