/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test', '<rootDir>/src/plugins'],
  testMatch: ['**/*.test.ts'],
  transform: {'^.+\\.ts$': ['ts-jest', {tsconfig: 'tsconfig.test.json'}]},
  setupFiles: ['<rootDir>/test/helpers/console.js'],
  testTimeout: 120000,
  maxWorkers: 2,
  modulePathIgnorePatterns: ['<rootDir>/dist', '<rootDir>/src/plugins/.*/dist'],
}
