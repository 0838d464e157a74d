import {createHmac, timingSafeEqual} from 'node:crypto'
import * as http from 'node:http'
import type {AddressInfo} from 'node:net'

import {SMTPServer} from 'smtp-server'

/** One request an HTTP receiver got. */
export interface ReceivedRequest {
  method: string
  url: string
  headers: http.IncomingHttpHeaders
  body: string
  at: number
}

export type Answer = {status: number; body?: string} | 'hang'

/**
 * A real HTTP server on 127.0.0.1 standing in for Slack's Web API, a Slack incoming webhook, a
 * webhook receiver or healthchecks.io: it records every request and answers what `answer` says
 * ('hang' never answers, as a stuck target does). Closing it also drops hanging connections.
 */
export async function startReceiver(answer: (request: ReceivedRequest, index: number) => Answer = () => ({status: 200, body: 'ok'})) {
  const received: ReceivedRequest[] = []
  const server = http.createServer((request, response) => {
    let body = ''
    request.setEncoding('utf8').on('data', (chunk: string) => (body += chunk))
    request.on('end', () => {
      const entry = {method: request.method ?? '', url: request.url ?? '', headers: request.headers, body, at: Date.now()}
      received.push(entry)
      const reply = answer(entry, received.length - 1)
      if (reply === 'hang') return
      response.writeHead(reply.status, {'content-type': 'application/json'}).end(reply.body ?? '')
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const {port} = server.address() as AddressInfo
  return {
    received,
    port,
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

/** How a webhook receiver checks X-Dbb-Signature-256 (the README's example, in TypeScript). */
export function signatureValid(rawBody: string, header: string | string[] | undefined, secret: string): boolean {
  if (typeof header !== 'string' || !header.startsWith('sha256=')) return false
  const expected = Buffer.from(createHmac('sha256', secret).update(rawBody).digest('hex'))
  const given = Buffer.from(header.slice('sha256='.length))
  return given.length === expected.length && timingSafeEqual(given, expected)
}

export interface ReceivedMail {
  from: string
  to: string[]
  user?: string
  data: string
}

/**
 * A real SMTP server (the smtp-server package) on 127.0.0.1, with password authentication. Without
 * `tls`, STARTTLS is off; with it, `implicit` is TLS from the first byte (smtps://, port 465 style)
 * and `starttls` offers STARTTLS and refuses authentication before it.
 */
export async function startSmtpReceiver(
  credentials = {user: 'dbb-mailer', pass: 'smtp-p@ss:w0rd/secret'},
  tls?: {mode: 'implicit' | 'starttls'; key: string; cert: string},
) {
  const mails: ReceivedMail[] = []
  const server = new SMTPServer({
    ...(tls ? {secure: tls.mode === 'implicit', key: tls.key, cert: tls.cert, allowInsecureAuth: false} : {disabledCommands: ['STARTTLS'], allowInsecureAuth: true}),
    authOptional: false,
    logger: false,
    onAuth(auth, _session, callback) {
      if (auth.username === credentials.user && auth.password === credentials.pass) return callback(null, {user: auth.username})
      return callback(new Error('Invalid username or password'))
    },
    onData(stream, session, callback) {
      let data = ''
      stream.setEncoding('utf8')
      stream.on('data', (chunk: string) => (data += chunk))
      stream.on('end', () => {
        const envelope = session.envelope
        mails.push({
          from: envelope.mailFrom ? envelope.mailFrom.address : '',
          to: envelope.rcptTo.map((entry) => entry.address),
          user: session.user as string | undefined,
          data,
        })
        callback()
      })
    },
  })
  // A client that rejects the certificate closes the socket mid-handshake: expected, not a test failure.
  server.on('error', () => {})
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const {port} = server.server.address() as AddressInfo
  return {mails, port, credentials, close: () => new Promise<void>((resolve) => server.close(() => resolve()))}
}
