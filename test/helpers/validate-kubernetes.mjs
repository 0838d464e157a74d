// Validates Kubernetes objects (a JSON array on stdin) with kubernetes-models, whose validators are
// generated from the Kubernetes API's OpenAPI schemas. A separate process because the package is
// ESM-only and the tests run as CommonJS. Prints a JSON array: null when valid, else the error.
const input = JSON.parse(await new Promise((resolve) => {
  let text = ''
  process.stdin.on('data', (chunk) => (text += chunk)).on('end', () => resolve(text))
}))
const results = []
for (const manifest of input) {
  try {
    const module = await import(`kubernetes-models/${manifest.apiVersion}/${manifest.kind}`)
    new module[manifest.kind](manifest).validate()
    results.push(null)
  } catch (error) {
    results.push(String(error?.message ?? error))
  }
}
process.stdout.write(JSON.stringify(results))
