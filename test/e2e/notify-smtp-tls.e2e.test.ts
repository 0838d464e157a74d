import {execFileSync} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {runCli, tempDir} from '../helpers/cli'
import {startSmtpReceiver} from '../helpers/notify-receivers'

/**
 * Email over TLS against a real smtp-server with a certificate made by openssl in the test:
 * smtps:// (TLS from the first byte) and smtp:// with STARTTLS required. The certificate is
 * verified by default: self-signed fails with a clear, non-retried error until its CA is trusted
 * through NODE_EXTRA_CA_CERTS. The password never appears in the output.
 */
const credentials = {user: 'dbb-mailer', pass: 'tls-smtp-p@ss:w0rd/secret'}
const password = encodeURIComponent(credentials.pass)

describe('notifications by email over TLS (real smtp-server, openssl certificates)', () => {
  let dir: string
  let ca: {cert: string; file: string}
  let server: {key: string; cert: string}

  beforeAll(async () => {
    dir = await tempDir('dbb-smtp-tls-')
    // A CA, and a server certificate it signs for 127.0.0.1 (IP SAN): what an internal mail relay has.
    const openssl = (args: string[]) => execFileSync('openssl', args, {cwd: dir, stdio: 'pipe'})
    openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=dbb test CA'])
    openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1'])
    await fs.writeFile(path.join(dir, 'san.ext'), 'subjectAltName = IP:127.0.0.1\n')
    openssl(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'san.ext'])
    ca = {cert: await fs.readFile(path.join(dir, 'ca.pem'), 'utf8'), file: path.join(dir, 'ca.pem')}
    server = {key: await fs.readFile(path.join(dir, 'server.key'), 'utf8'), cert: await fs.readFile(path.join(dir, 'server.pem'), 'utf8')}
  })

  afterAll(async () => {
    await fs.rm(dir, {recursive: true, force: true})
  })

  it.each([
    ['smtps:// (implicit TLS)', 'implicit', (port: number) => `smtps://${credentials.user}:${password}@127.0.0.1:${port}/?from=dbb@db.example&to=ops@example.com`],
    ['smtp:// with starttls=required', 'starttls', (port: number) => `smtp://${credentials.user}:${password}@127.0.0.1:${port}/?from=dbb@db.example&to=ops@example.com&starttls=required`],
  ] as const)('%s: an untrusted certificate fails clearly and once; with its CA trusted (NODE_EXTRA_CA_CERTS) the mail is delivered', async (_name, mode, url) => {
    const smtp = await startSmtpReceiver(credentials, {mode, ...server})
    try {
      const untrusted = await runCli(['notify', 'test', '--json'], {NOTIFY_URLS: url(smtp.port), NOTIFY_TIMEOUT: '5s'})
      expect(untrusted.code).toBe(1)
      const [failed] = JSON.parse(untrusted.stdout).results
      expect(failed).toMatchObject({target: 'email', ok: false, attempts: 1})
      expect(failed.error).toMatch(/TLS certificate is not trusted .*NODE_EXTRA_CA_CERTS/)
      expect(smtp.mails).toHaveLength(0)

      const trusted = await runCli(['notify', 'test', '--json'], {NOTIFY_URLS: url(smtp.port), NODE_EXTRA_CA_CERTS: ca.file})
      expect(trusted.code).toBe(0)
      expect(JSON.parse(trusted.stdout).results[0]).toMatchObject({target: 'email', ok: true})
      expect(smtp.mails).toHaveLength(1)
      expect(smtp.mails[0]).toMatchObject({from: 'dbb@db.example', to: ['ops@example.com'], user: credentials.user})
      expect(smtp.mails[0].data).toMatch(/X-Dbb-Event: notify\.test/i)

      for (const output of [untrusted.stdout, untrusted.stderr, trusted.stdout, trusted.stderr]) {
        expect(output).not.toContain(credentials.pass)
        expect(output).not.toContain(password)
      }
    } finally {
      await smtp.close()
    }
  })

  it('a trusted certificate for another host name is refused too (the URL names 127.0.0.1, the certificate localhost only)', async () => {
    const openssl = (args: string[]) => execFileSync('openssl', args, {cwd: dir, stdio: 'pipe'})
    openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'other.key', '-out', 'other.csr', '-subj', '/CN=localhost'])
    await fs.writeFile(path.join(dir, 'other.ext'), 'subjectAltName = DNS:localhost\n')
    openssl(['x509', '-req', '-in', 'other.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'other.pem', '-days', '2', '-extfile', 'other.ext'])
    const smtp = await startSmtpReceiver(credentials, {mode: 'implicit', key: await fs.readFile(path.join(dir, 'other.key'), 'utf8'), cert: await fs.readFile(path.join(dir, 'other.pem'), 'utf8')})
    try {
      const result = await runCli(['notify', 'test', '--json'], {
        NOTIFY_URLS: `smtps://${credentials.user}:${password}@127.0.0.1:${smtp.port}/?to=ops@example.com`,
        NODE_EXTRA_CA_CERTS: ca.file,
      })
      expect(result.code).toBe(1)
      expect(JSON.parse(result.stdout).results[0].error).toMatch(/TLS certificate is not trusted/)
      expect(smtp.mails).toHaveLength(0)
      expect(result.stdout + result.stderr).not.toContain(credentials.pass)
    } finally {
      await smtp.close()
    }
  })
})
